"""The `nnsight-jupyter` command.

    nnsight-jupyter demo [--layers N]   load the bundled SmolLM2, patch the residual stream of a clean
                                        indirect-object prompt into a corrupted one, layer by layer,
                                        and print the logit-difference table.
"""

from __future__ import annotations

import argparse
import sys
import time

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
ANSWERS = (" Mary", " John")


def demo(model_name: str = "smollm2-135m", every: int = 1) -> list[tuple[int, float, float]]:
    """Residual-stream patching at the subject position; returns (layer, logit diff, recovered)."""
    from . import LanguageModel

    started = time.perf_counter()
    model = LanguageModel(model_name)
    loaded = time.perf_counter() - started
    tok = model.tokenizer
    clean_ids, corrupt_ids = tok(CLEAN)["input_ids"], tok(CORRUPT)["input_ids"]
    if len(clean_ids) != len(corrupt_ids):
        raise SystemExit("the demo prompts must tokenize to the same length")
    position = next(i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b and i > 3)
    mary, john = (tok(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS)
    layers = list(range(0, len(model.model.layers), every))

    started = time.perf_counter()
    with model.trace() as tracer:
        with tracer.invoke(CLEAN):
            clean_resid = [model.model.layers[i].output[:, position] for i in layers]
            clean_logits = model.lm_head.output[:, -1].save()
        with tracer.invoke(CORRUPT):
            corrupt_logits = model.lm_head.output[:, -1].save()
        patched = []
        for i, resid in zip(layers, clean_resid):
            with tracer.invoke(CORRUPT):
                model.model.layers[i].output[:, position] = resid
                patched.append(model.lm_head.output[:, -1].save())
    ran = time.perf_counter() - started

    def diff(logits) -> float:
        row = logits.value[0]
        return float(row[mary] - row[john])

    clean, corrupt = diff(clean_logits), diff(corrupt_logits)
    rows = [(i, diff(p), (diff(p) - corrupt) / (clean - corrupt)) for i, p in zip(layers, patched)]
    print(f"{model_name}: loaded in {loaded:.1f} s; {len(layers) + 2} invokes in one forward pass, {ran:.2f} s")
    print(f"clean:   {CLEAN!r} -> logit diff (Mary - John) {clean:+.2f}")
    print(f"corrupt: {CORRUPT!r} -> {corrupt:+.2f}")
    print(f"patching the residual stream at token {position} ({tok.decode([clean_ids[position]])!r}) "
          "from clean into corrupt:")
    print(f"{'layer':>5}  {'logit diff':>10}  {'recovered':>9}")
    for layer, value, recovered in rows:
        bar = "#" * max(0, min(40, round(recovered * 40)))
        print(f"{layer:>5}  {value:>+10.2f}  {recovered:>9.2f}  {bar}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnsight-jupyter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="residual patching on the bundled model, printed as a table")
    run_demo.add_argument("--model", default="smollm2-135m")
    run_demo.add_argument("--every", type=int, default=1, help="patch every N-th layer")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.model, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
