"""Checks that an intervention graph is well formed and does only what the allow-list admits.

`validate(graph)` runs on every decoded graph (`graph.codec.decode`) and may run on the client
too; `NodeChecker` checks nodes one at a time, as a tracer adds them. Each error names the node
id, its op and the user's line (as the error's `where`), and says what is wrong:

* `GraphError`: wrong version, malformed node (ids not increasing, a Ref to a later or missing node,
  an unknown run or invoke, a bad `backward`, a bad module path, a private attribute, arguments
  nested too deep, too many nodes);
* `OpNotAllowedError` (a GraphError): an op that is not in `graph.ops.OPS`;
* `KeywordNotAllowedError` (a GraphError): a keyword argument anywhere (run options, invoke inputs,
  node keywords) that `graph.keywords.KEYWORDS` does not admit, or of the wrong type;
* `WeightWriteError`: an op that writes an argument (`Op.written`: ``setitem``, ``Tensor.*_``,
  ``inplace=True``, ``embedding(max_norm=)``, positional ``out``) aimed at a model parameter or
  buffer (a ``module.param`` node) or a view of one (`Op.aliased`: index, ``.T``, ``.data``,
  ``detach``, ``view``, ``expand`` ...). This static check covers views made by the graph itself;
  the executor also refuses, at run time, writes into any tensor sharing storage with a weight.

A graph that passed `validate` (or `graph.codec.decode`) is stamped (`is_validated`), so that the
executor does not check it again.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..errors import GraphError, KeywordNotAllowedError, OpNotAllowedError, WeightWriteError
from .keywords import SECTION_OF_KIND, check_keywords
from .nodes import GRAPH_VERSION, Graph, Node, Ref
from .ops import NAMES, OPS, VIEW_OPS, refusal

__all__ = ["validate", "is_validated", "seal", "check_run_options", "check_invoke_inputs", "NodeChecker", "check_node",
           "check_module_path", "node_error", "MAX_NODES", "MAX_DEPTH", "VIEW_OPS"]

MAX_NODES = 200_000
MAX_DEPTH = 32          # containers nested in one argument
MAX_PATH = 1024         # characters of a module path

_SEGMENT = r"(?:[A-Za-z][A-Za-z0-9_]*|[0-9]+)"
_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# Per-op flags and keyword sections, computed once per op name from the declarations of OPS (so
# ops added to OPS later are picked up).
_WRITES = 2      # writes an argument in place (Op.written)
_VIEW = 4        # its result may alias an argument (Op.aliased)
_PARAM = 8       # Op.weight: its result is a model parameter or buffer
_SPECIAL = 16    # Op.checks: literal names among its arguments
_FLAGS: dict[str, int] = {}
_SECTIONS: dict[str, str] = {}   # op name -> its section of graph.keywords.KEYWORDS
_CHECKS: dict[str, tuple] = {}   # op name -> (min args, max args or None, ((index, name rule), ...))


def _op_flags(node: Any) -> int:
    """The flags of node.op, or OpNotAllowedError if it is not on the allow-list."""
    name = node.op
    op = OPS.get(name) if type(name) is str else None
    if op is None:
        why = refusal(name[:120]) if type(name) is str else None
        raise node_error(node, why or f"operation {name!r:.120} is not on the allow-list (see "
                         "nnsight_jupyter.graph.ops.OPS); it cannot run inside a trace", OpNotAllowedError)
    writes = op.writes is not None and bool(op.writes.params)
    flags = ((_WRITES if writes else 0)
             | (_VIEW if op.view_of or writes else 0)
             | (_PARAM if op.weight else 0)
             | (_SPECIAL if op.checks or op.arity is not None else 0))
    _SECTIONS[name] = op.keywords or SECTION_OF_KIND[op.kind]
    if flags & _SPECIAL:
        low, high = op.arity or (0, None)
        _CHECKS[name] = (low, high, tuple((c.index, _NAME_RULES[c.what]) for c in op.checks))
    _FLAGS[name] = flags
    return flags


def _where(node: Any) -> str | None:
    line = getattr(node, "line", None)
    return line if isinstance(line, str) and line else None


def node_error(node: Any, message: str, cls: type[Exception] = GraphError) -> Exception:
    """An error about `node` (anything with id, op, line, module): its id and op, then what is wrong,
    with the node's user line and module path as the error's fields (the message starts with the line)."""
    line = _where(node)
    module = getattr(node, "module", None)
    label = f"graph node %{str(getattr(node, 'id', '?'))[:40]} (op {getattr(node, 'op', '?')!r:.80}"
    label += ")" if line else ", no source line)"
    return cls(f"{label}: {message}", where=line,
               module=module if type(module) is str and len(module) <= MAX_PATH else None)


def check_module_path(path: Any, what: str = "module path") -> str | None:
    """None if `path` is a valid module path ("" = root), else what is wrong with it."""
    if type(path) is not str:
        return f"{what} must be a str, not {type(path).__qualname__}"
    if path == "":
        return None
    if len(path) > MAX_PATH or _PATH.fullmatch(path) is None:
        return (f"{what} {path!r:.120} is not allowed: it must be dot-separated names (a letter, then "
                "letters, digits, '_') or indices, with no private ('_x') or dunder ('__x__') parts")
    return None


class NodeChecker:
    """Checks nodes one at a time, in program order, against those it has seen.

    `runs` maps run id -> (position of the run, set of its invoke ids); without it, run and
    invoke ids are not checked (a tracer that adds runs as it goes can pass it later).
    """

    def __init__(self, runs: Mapping[int, tuple[int, set]] | None = None):
        self.nodes: dict[int, Node] = {}
        self.runs = runs
        self._last_id = -1
        self._param_views: dict[int, int] = {}     # node id -> id of the module.param it may alias
        self._paths: set[str] = set()                # module paths already found valid

    # ------------------------------------------------------------------------------ nodes
    def add(self, node: Node) -> None:
        """Check `node` and remember it (raises GraphError / OpNotAllowedError / WeightWriteError)."""
        nodes = self.nodes
        nid = node.id
        if type(nid) is not int or nid <= self._last_id or len(nodes) >= MAX_NODES:
            self._check_id(node)
        op_name = node.op
        flags = _FLAGS.get(op_name) if type(op_name) is str else None
        if flags is None:
            flags = _op_flags(node)
        run, invoke, call, step, module = node.run, node.invoke, node.call, node.step, node.module
        if not (type(run) is int and type(invoke) is int and type(call) is int and type(step) is int
                and run >= 0 and invoke >= 0 and call >= 0 and step >= -1 and type(node.repeat) is bool
                and type(node.line) is str
                and (module is None or (type(module) is str and module in self._paths))):
            self._check_fields(node)
        args, kwargs = node.args, node.kwargs
        if type(args) is not tuple and type(args) is not list:
            raise node_error(node, f"args must be a tuple, not {type(args).__qualname__}")
        if type(kwargs) is not dict:
            raise node_error(node, f"kwargs must be a dict, not {type(kwargs).__qualname__}")
        runs = self.runs
        if runs is not None:
            entry = runs.get(run)
            if entry is None or invoke not in entry[1]:
                self._check_run(node)
            run_pos = entry[0]
        else:
            run_pos = None
        for a in args:
            t = type(a)
            if t is Ref:
                target = nodes.get(a.id) if type(a.id) is int else None
                if target is None or (target.run != run and run_pos is not None):
                    self._check_ref(node, a, run_pos)
            elif t in _CONTAINERS:
                self._walk(node, a, 1, run_pos)
        if kwargs:
            for k, v in kwargs.items():
                if type(k) is not str:
                    raise node_error(node, f"keyword argument name {k!r:.80} must be a str")
                if type(v) is Ref or type(v) in _CONTAINERS:
                    self._walk(node, (v,), 0, run_pos)
        if node.backward is not None:
            target = nodes.get(node.backward) if type(node.backward) is int else None
            if target is None or not OPS[target.op].runs_backward:
                raise node_error(node, f"backward={node.backward!r:.40} must be the id of an earlier "
                                       "'backward' node")
        if flags:                       # a write into a weight is refused as such, whatever its keywords
            self._check_flagged(node, flags)
        if kwargs:
            self._check_keywords(node)
        nodes[nid] = node
        self._last_id = nid

    def add_built(self, node: Node) -> None:
        """Check a node the tracer has just made, whose structure holds by construction (ids in
        order, Refs to earlier nodes of the same graph, runs, invokes, module paths of the model's
        own tree): only its keyword arguments, the names it reads and what it writes. (`add` runs
        these same checks, after the structural ones.)"""
        op_name = node.op
        flags = _FLAGS.get(op_name)
        if flags is None:
            flags = _op_flags(node)
        if flags:
            self._check_flagged(node, flags)
        if node.kwargs:
            self._check_keywords(node)
        self.nodes[node.id] = node
        self._last_id = node.id

    def _check_keywords(self, node: Node) -> None:
        problem = check_keywords(_SECTIONS[node.op], node.kwargs, f"keyword argument of {node.op!r}")
        if problem:
            raise node_error(node, problem, KeywordNotAllowedError)

    def _check_flagged(self, node: Node, flags: int) -> None:
        """The checks of ops with flags: names they read; writes into, and views of, parameters."""
        if flags & _SPECIAL:
            self._check_special(node)
        views = self._param_views
        if views and flags & (_WRITES | _VIEW):      # only once a parameter has been read
            op = OPS[node.op]
            if flags & _WRITES:
                for target in op.written(node.args, node.kwargs):
                    if type(target) is Ref and target.id in views:
                        self._refuse_weight_write(node, target)
            if flags & _VIEW:
                source = self._viewed_param(op.aliased(node.args, node.kwargs))
                if source is not None:
                    views[node.id] = source
        if flags & _PARAM:
            views[node.id] = node.id

    def _check_id(self, node: Node) -> None:
        nid = node.id
        if len(self.nodes) >= MAX_NODES:
            raise GraphError(f"the graph has more than {MAX_NODES} nodes")
        if type(nid) is not int or nid < 0:
            raise node_error(node, f"node id {nid!r:.40} must be an int >= 0")
        what = "repeats" if nid in self.nodes else "is smaller than"
        raise node_error(node, f"node id {nid} {what} an earlier node id ({self._last_id}): node ids "
                          "must be unique and strictly increasing in program order")

    def _viewed_param(self, values: list) -> int | None:
        """The module.param node that one of `values` (or a Ref nested in one) may alias, or None."""
        views = self._param_views
        for value in values:
            if type(value) is Ref:
                if value.id in views:
                    return views[value.id]
            elif type(value) in _CONTAINERS:
                refs: list[Ref] = []
                _collect_refs(value, 0, refs)
                for ref in refs:
                    if ref.id in views:
                        return views[ref.id]
        return None

    def _refuse_weight_write(self, node: Node, target: Ref) -> None:
        param = self.nodes[self._param_views[target.id]]
        how = ("is" if target.id == param.id else "is a view of") + f" parameter %{param.id}"
        raise node_error(node, f"parameters are read-only inside a trace; clone() first (the argument "
                          f"it writes, %{target.id}, {how} {_param_label(param)}); model parameters and "
                          "buffers can be read, never written", WeightWriteError)

    def _remember(self, node: Node) -> None:
        """Record an (already checked) node, and whether it is a parameter or a view of one."""
        nid = node.id
        flags = _FLAGS.get(node.op) if type(node.op) is str else 0
        if flags is None:
            flags = _op_flags(node)
        if flags & _PARAM:
            self._param_views[nid] = nid
        elif flags & _VIEW and self._param_views:
            source = self._viewed_param(OPS[node.op].aliased(node.args, node.kwargs))
            if source is not None:
                self._param_views[nid] = source
        self.nodes[nid] = node
        if type(nid) is int and nid > self._last_id:
            self._last_id = nid

    def _check_fields(self, node: Node) -> None:
        """The slow path: find which field is wrong (or remember a new valid module path)."""
        for name in ("run", "invoke", "call", "step"):
            value = getattr(node, name)
            if type(value) is not int or value < (-1 if name == "step" else 0):
                raise node_error(node, f"{name} must be an int >= {-1 if name == 'step' else 0}, "
                                       f"not {value!r:.40}")
        if type(node.repeat) is not bool:
            raise node_error(node, f"repeat must be a bool, not {node.repeat!r:.40}")
        if node.backward is not None and type(node.backward) is not int:
            raise node_error(node, f"backward must be a node id or None, not {node.backward!r:.40}")
        if type(node.line) is not str:
            raise node_error(node, f"line must be a str, not {type(node.line).__qualname__}")
        if node.module is not None:
            problem = check_module_path(node.module)
            if problem:
                raise node_error(node, problem)
            self._paths.add(node.module)

    def _check_run(self, node: Node) -> None:
        entry = self.runs.get(node.run)
        if entry is None:
            raise node_error(node, f"run {node.run} does not exist (runs: {sorted(self.runs)[:20]})")
        raise node_error(node, f"invoke {node.invoke} does not exist in run {node.run} "
                          f"(its invokes: {sorted(entry[1])[:20]})")

    def _check_special(self, node: Node) -> None:
        """Ops whose arguments name things (`Op.checks`: getattr, module.param, module.call): their
        number of arguments (`Op.arity`) and each name, a literal str valid for what it names."""
        low, high, checks = _CHECKS[node.op]
        args = node.args
        count = len(args)
        if count < low or (high is not None and count > high):
            raise self._bad_names(node)
        for index, rule in checks:
            name = args[index]
            if type(name) is not str:
                raise self._bad_names(node)
            problem = rule(name)
            if problem:
                raise node_error(node, problem)

    def _bad_names(self, node: Node) -> Exception:
        op = OPS[node.op]
        low, high = op.arity or (0, None)
        count = f"{low}" if high == low else f"{low} or more" if high is None else f"{low} to {high}"
        names = ", ".join(f"the {c.what} as argument {c.index}" for c in op.checks)
        return node_error(node, f"{node.op} needs {count} arguments, with {names} a literal str")

    # ------------------------------------------------------------------------------ refs
    def _check_ref(self, node: Node, ref: Ref, run_pos: int | None) -> None:
        rid = ref.id
        target = self.nodes.get(rid) if type(rid) is int else None
        if target is None:
            if type(rid) is int and rid >= node.id:
                raise node_error(node, f"argument %{rid} refers to a later node (or itself): a node can only "
                                  "use values of nodes before it")
            raise node_error(node, f"argument %{rid!r:.40} refers to a node that does not exist")
        if run_pos is not None:
            target_pos = self.runs[target.run][0]
            if target_pos > run_pos:
                raise node_error(node, f"argument %{rid} belongs to run {target.run}, which runs after "
                                  f"this node's run {node.run}")

    def _walk(self, node: Node, value: Any, depth: int, run_pos: int | None) -> None:
        """Check every Ref inside the container `value` (nested `depth` deep)."""
        if depth > MAX_DEPTH:
            raise node_error(node, f"an argument nests more than {MAX_DEPTH} containers deep")
        t = type(value)
        if t is dict:
            items: Any = value.values()
        elif t is slice:
            items = (value.start, value.stop, value.step)
        else:
            items = value
        for v in items:
            tv = type(v)
            if tv is Ref:
                self._check_ref(node, v, run_pos)
            elif tv in _CONTAINERS and not (tv is slice and type(v.start) in _SCALARS
                                           and type(v.stop) in _SCALARS and type(v.step) in _SCALARS):
                self._walk(node, v, depth + 1, run_pos)


def _public_name(name: str) -> str | None:
    if _NAME.fullmatch(name) is None:
        return (f"parameter name {name!r:.80} is not allowed: only public names (a letter, then letters, "
                "digits, '_'), no private or dunder names")
    return None


def _public_attribute(name: str) -> str | None:
    if name.startswith("_"):
        return (f"attribute {name!r:.80} is private or a dunder; only public attributes can be read inside "
                "a trace")
    return None


#: The rule for each kind of name an op's arguments may hold (`graph.ops.NAMES`, `Op.checks`).
_NAME_RULES = {"module path": check_module_path, "parameter name": _public_name,
               "attribute name": _public_attribute}
if set(_NAME_RULES) != set(NAMES):
    raise ImportError("graph.validate has no rule for some kind of name in graph.ops.NAMES")

_SCALARS = frozenset({int, type(None), str, float, bool})
_CONTAINERS = frozenset({tuple, list, dict, slice})


def _collect_refs(value: Any, depth: int, out: list[Ref]) -> None:
    t = type(value)
    if t is Ref:
        out.append(value)
        return
    if t not in _CONTAINERS:
        return
    if depth >= MAX_DEPTH:
        raise GraphError(f"a value nests more than {MAX_DEPTH} containers deep")
    if t is dict:
        value = value.values()
    elif t is slice:
        value = (value.start, value.stop, value.step)
    for v in value:
        _collect_refs(v, depth + 1, out)


def _param_label(node: Node) -> str:
    path, name = node.args
    return f"{path}.{name}" if path else name


def check_node(node: Node, known: Mapping[int, Node]) -> None:
    """Check one node against the earlier nodes `known` (id -> Node, in program order).

    Convenience for one-off checks; a tracer adding many nodes should keep one `NodeChecker`.
    """
    checker = NodeChecker()
    for earlier in known.values():
        checker._remember(earlier)
    checker.add(node)


# ================================================================================= the graph
def validate(graph: Graph) -> None:
    """Check `graph` in full; raises GraphError, OpNotAllowedError, KeywordNotAllowedError or
    WeightWriteError. A graph that passes is stamped (`is_validated`)."""
    checker = begin(graph)
    for node in graph.nodes:
        checker.add(node)
    finish(graph, checker)


def is_validated(graph: Graph) -> bool:
    """True if `graph` passed `validate` (or was decoded, or `seal`ed by its builder) and has not
    grown since."""
    return graph.checked == _stamp(graph)


def seal(graph: Graph) -> None:
    """Stamp a graph built by the tracer, whose nodes went through `NodeChecker.add_built`, its run
    options through `check_run_options` and its invokes' inputs through `check_invoke_inputs`, so
    that running it does not check it again (a host decoding it checks everything anew)."""
    graph.checked = _stamp(graph)


def check_invoke_inputs(kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse a keyword input of an invoke that is not on the keyword allow-list (it would reach the
    model's forward, or model.generate); KeywordNotAllowedError naming it."""
    problem = check_keywords("model", kwargs, f"keyword input of {where}, for the model's forward")
    if problem:
        raise KeywordNotAllowedError(problem)


def _stamp(graph: Graph) -> tuple:
    return (id(graph.nodes), len(graph.nodes), id(graph.runs), len(graph.runs))


def check_run_options(kind: str, options: Mapping[str, Any], where: str = "") -> None:
    """Refuse an option of a `kind` run ("trace" or "generate") that is not on the keyword allow-list
    (KeywordNotAllowedError naming it, where it was given, and what is allowed)."""
    section = "generate" if kind == "generate" else "trace"
    suffix = f", {where}" if where else ""
    problem = check_keywords(section, options, f"option of {kind}(){suffix}")
    if problem:
        if section == "trace":
            problem += "; keyword arguments of model.trace(...) are inputs of its first invoke"
        raise KeywordNotAllowedError(problem)


def begin(graph: Graph) -> NodeChecker:
    """First part of `validate`: the version, the runs and invokes; returns the checker for the
    nodes (`graph.nodes` is not looked at, except for its length). `graph.codec` checks each node
    as it decodes it, then calls `finish`."""
    if graph.version != GRAPH_VERSION or type(graph.version) is not int:
        raise GraphError(
            f"graph format version {graph.version!r:.40} is not supported: this nnsight_jupyter reads "
            f"version {GRAPH_VERSION}. Upgrade nnsight_jupyter on the side that is older (client or host) "
            "so both speak the same version."
        )
    if graph.model is not None and type(graph.model) is not str:
        raise GraphError(f"graph.model must be a str or None, not {type(graph.model).__qualname__}")
    if len(graph.nodes) > MAX_NODES:
        raise GraphError(f"the graph has {len(graph.nodes)} nodes, more than the limit of {MAX_NODES}")
    runs: dict[int, tuple[int, set]] = {}
    for position, run in enumerate(graph.runs):
        if type(run.id) is not int or run.id < 0:
            raise GraphError(f"run id {run.id!r:.40} must be an int >= 0")
        if run.id in runs:
            raise GraphError(f"run id {run.id} appears twice")
        if run.kind not in ("trace", "generate"):
            raise GraphError(f"run {run.id}: kind {run.kind!r:.40} must be 'trace' or 'generate'")
        if type(run.options) is not dict or any(type(k) is not str for k in run.options):
            raise GraphError(f"run {run.id}: options must be a dict with str keys")
        check_run_options(run.kind, run.options, f"run {run.id}")
        invoke_ids: set = set()
        for invoke in run.invokes:
            if type(invoke.id) is not int or invoke.id < 0:
                raise GraphError(f"run {run.id}: invoke id {invoke.id!r:.40} must be an int >= 0")
            if invoke.id in invoke_ids:
                raise GraphError(f"run {run.id}: invoke id {invoke.id} appears twice")
            if type(invoke.all_rows) is not bool:
                raise GraphError(f"run {run.id} invoke {invoke.id}: all_rows must be a bool")
            if type(invoke.kwargs) is not dict or any(type(k) is not str for k in invoke.kwargs):
                raise GraphError(f"run {run.id} invoke {invoke.id}: kwargs must be a dict with str keys")
            if invoke.all_rows and (invoke.args or invoke.kwargs):
                raise GraphError(f"run {run.id} invoke {invoke.id}: an all_rows invoke takes no input")
            check_invoke_inputs(invoke.kwargs, f"invoke {invoke.id} of run {run.id}")
            invoke_ids.add(invoke.id)
        runs[run.id] = (position, invoke_ids)
    return NodeChecker(runs)


def finish(graph: Graph, checker: NodeChecker) -> None:
    """Last part of `validate`, once every node went through `checker.add`: run inputs that use
    values of earlier runs, and job-owned parameters."""
    runs = checker.runs
    assert runs is not None
    for position, run in enumerate(graph.runs):
        values: list[Any] = [run.options]
        for invoke in run.invokes:
            values.append(invoke.args)
            values.append(invoke.kwargs)
        for ref in (r for v in values for r in _refs(v, f"run {run.id}")):
            target = checker.nodes.get(ref.id) if type(ref.id) is int else None
            if target is None:
                raise GraphError(f"run {run.id}: an input refers to node %{ref.id!r:.40}, which does not exist")
            if runs[target.run][0] >= position:
                raise GraphError(f"run {run.id}: an input refers to node %{ref.id} of run {target.run}; "
                                 "inputs can only use values of earlier runs")

    names: set[str] = set()
    for p in graph.parameters:
        if type(p.name) is not str or _NAME.fullmatch(p.name) is None:
            raise GraphError(f"parameter name {p.name!r:.80} must be an identifier not starting with '_'")
        if p.name in names:
            raise GraphError(f"parameter {p.name!r} appears twice")
        names.add(p.name)
        if not isinstance(p.value, torch.Tensor):
            raise GraphError(f"parameter {p.name!r}: its value must be a tensor, not {type(p.value).__qualname__}")
        if type(p.requires_grad) is not bool:
            raise GraphError(f"parameter {p.name!r}: requires_grad must be a bool")
    graph.checked = _stamp(graph)


def _refs(value: Any, where: str) -> list[Ref]:
    out: list[Ref] = []
    try:
        _collect_refs(value, 0, out)
    except GraphError as e:
        raise GraphError(f"{where}: {e.reason}") from None
    return out
