"""A team token reaches the model host and nothing else; the server owner's token reaches everything.

Against the real server of `conftest.jupyter_host` (team tokens USERS, owner token ADMIN_TOKEN): every
Jupyter endpoint that is not nnsight's answers a team token exactly as it answers a request with no
credentials (403, a redirect to the login page, or the same 404), websockets included; the nnsight
endpoints work with it. A second group starts `ServerApp` in a subprocess to read its handler table and
check the configurations the identity provider refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from jupyter_server.auth.identity import User
from traitlets import TraitError

from nnsight_jupyter.server.auth import AUTH_RESOURCE, OWNER, NNsightIdentityProvider, TeamScopeAuthorizer, may_reach
from nnsight_jupyter.server.launch import IDENTITY_PROVIDER, host_paths

from .conftest import ADMIN_TOKEN

TEAM = "token-alice"
SECRET = "top secret notebook text"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _call(host, method: str, path: str, token: str | None, body: bytes | None = None):
    """(status, headers, body) of one request, redirects not followed."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    if method in ("POST", "PUT", "PATCH") and body is None:
        body = b"{}"
    request = urllib.request.Request(host.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def scoped_host(jupyter_host):
    """The shared host with a file in its root_dir and a kernel of the owner's (removed afterwards)."""
    (host_paths(jupyter_host.root)["root_dir"] / "secret.txt").write_text(SECRET)
    status, _, body = _call(jupyter_host, "POST", "api/kernels", ADMIN_TOKEN)
    assert status == 201, body
    jupyter_host.kernel_id = json.loads(body)["id"]
    yield jupyter_host
    _call(jupyter_host, "DELETE", f"api/kernels/{jupyter_host.kernel_id}", ADMIN_TOKEN)


# Every Jupyter REST endpoint of this server that is not nnsight's (see the handler table test below):
# jupyter_server, jupyter_server_terminals, jupyter_lsp, jupyterlab, jupyterlab_server, and pages.
ENDPOINTS = [
    ("GET", "api/kernels"), ("POST", "api/kernels"), ("GET", "api/kernels/{kernel}"),
    ("POST", "api/kernels/{kernel}/interrupt"), ("POST", "api/kernels/{kernel}/restart"),
    ("DELETE", "api/kernels/{kernel}"),
    ("GET", "api/sessions"), ("POST", "api/sessions"),
    ("GET", "api/contents"), ("GET", "api/contents/secret.txt"), ("GET", "api/contents/no-such-file.txt"),
    ("GET", "api/contents/secret.txt?content=1&format=text"), ("PUT", "api/contents/new.txt"),
    ("POST", "api/contents"), ("DELETE", "api/contents/secret.txt"), ("GET", "api/contents/secret.txt/checkpoints"),
    ("GET", "files/secret.txt"), ("GET", "files/no-such-file.txt"), ("GET", "view/secret.txt"),
    ("GET", "nbconvert/html/secret.txt"), ("GET", "api/nbconvert"),
    ("GET", "api/kernelspecs"), ("GET", "api/kernelspecs/python3"), ("GET", "kernelspecs/python3/kernel.json"),
    ("GET", "api/terminals"), ("POST", "api/terminals"),
    ("GET", "api/config/notebook"), ("PATCH", "api/config/notebook"),
    ("GET", "api/me"), ("PATCH", "api/me"), ("GET", "api/status"), ("GET", "api/spec.yaml"),
    ("GET", "api/resolvePath?path=secret.txt"), ("POST", "api/shutdown"), ("POST", "api/events"),
    ("POST", "api/security/csp-report"), ("GET", "metrics"), ("GET", "lsp/status"),
    ("GET", "lab"), ("GET", "lab/tree/secret.txt"), ("GET", "doc/tree/secret.txt"),
    ("GET", "lab/api/workspaces"), ("PUT", "lab/api/workspaces/team"), ("GET", "lab/api/settings"),
    ("PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes"), ("GET", "lab/api/translations"),
    ("GET", "lab/api/extensions"), ("POST", "lab/api/extensions"), ("GET", "lab/api/plugins"),
    ("GET", "lab/api/build"), ("POST", "lab/api/build"), ("GET", "lab/api/news"), ("GET", "lab/api/update"),
    ("GET", "lab/api/themes/x.css"),     # (lab/api/licenses/ hangs for any caller, even without our provider)
    ("GET", "lab/api/listings/@jupyterlab/extensionmanager-extension/listings.json"),
    ("GET", "no/such/page"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS, ids=[f"{m} /{p}" for m, p in ENDPOINTS])
def test_team_token_is_no_credential_off_the_host(scoped_host, method, path):
    path = path.format(kernel=scoped_host.kernel_id)
    team = _call(scoped_host, method, path, TEAM)
    anonymous = _call(scoped_host, method, path, None)
    assert team[0] == anonymous[0], (team[0], team[2][:300], anonymous[0])
    assert team[0] in (302, 403, 404), (team[0], team[2][:300])
    if team[0] == 302:
        assert "/login" in team[1]["Location"]
    assert SECRET.encode() not in team[2]


# Pages any anonymous caller gets (no credential needed): a team token gets the same, nothing more.
PUBLIC = [("GET", ""), ("GET", "api"), ("GET", "login"), ("GET", "robots.txt"), ("GET", "favicon.ico"),
          ("GET", "static/style/bootstrap.min.css")]


@pytest.mark.parametrize("method,path", PUBLIC, ids=[f"{m} /{p}" for m, p in PUBLIC])
def test_team_token_gets_only_what_anyone_gets_on_public_pages(scoped_host, method, path):
    team = _call(scoped_host, method, path, TEAM)
    anonymous = _call(scoped_host, method, path, None)
    assert team[0] == anonymous[0] and len(team[2]) == len(anonymous[2])
    assert SECRET.encode() not in team[2]


def test_refused_team_requests_changed_nothing(scoped_host):
    """After every refused POST / PUT / DELETE above: no new kernel, the kernel and the file still there."""
    status, _, body = _call(scoped_host, "GET", "api/kernels", ADMIN_TOKEN)
    assert status == 200 and [k["id"] for k in json.loads(body)] == [scoped_host.kernel_id]
    for method in ("POST", "PUT"):
        assert _call(scoped_host, method, "api/kernels" if method == "POST" else "api/contents/x.txt", TEAM)[0] == 403
    status, _, body = _call(scoped_host, "GET", "api/kernels", ADMIN_TOKEN)
    assert [k["id"] for k in json.loads(body)] == [scoped_host.kernel_id]
    assert _call(scoped_host, "GET", "api/contents/x.txt", ADMIN_TOKEN)[0] == 404
    assert _call(scoped_host, "GET", "api/terminals", ADMIN_TOKEN)[2] == b"[]"


def test_team_token_cannot_tell_existing_files_from_missing_ones(scoped_host):
    for prefix in ("api/contents/", "files/", "view/"):
        there = _call(scoped_host, "GET", prefix + "secret.txt", TEAM)
        missing = _call(scoped_host, "GET", prefix + "no-such-file.txt", TEAM)
        assert there[0] == missing[0] and there[0] in (302, 403)


def _ws_status(host, path: str, token: str | None) -> int:
    """101 if the websocket at `path` opens for `token`, else the HTTP status of the refused handshake."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with connect(host.url.replace("http", "ws") + path, additional_headers=headers, open_timeout=30):
            pass
    except InvalidStatus as error:
        return error.response.status_code
    return 101


WEBSOCKETS = ["api/kernels/{kernel}/channels", "terminals/websocket/1", "lsp/ws/pylsp", "api/events/subscribe"]


@pytest.mark.parametrize("path", WEBSOCKETS)
def test_team_token_opens_no_jupyter_websocket(scoped_host, path):
    path = path.format(kernel=scoped_host.kernel_id)
    assert _ws_status(scoped_host, path, TEAM) == 403
    assert _ws_status(scoped_host, path, None) == 403


def test_owner_token_still_reaches_kernels_and_contents(scoped_host):
    assert _ws_status(scoped_host, f"api/kernels/{scoped_host.kernel_id}/channels", ADMIN_TOKEN) == 101
    status, _, body = _call(scoped_host, "GET", "api/contents/secret.txt?content=1&format=text", ADMIN_TOKEN)
    assert status == 200 and json.loads(body)["content"] == SECRET
    status, _, body = _call(scoped_host, "GET", "files/secret.txt", ADMIN_TOKEN)
    assert status == 200 and body == SECRET.encode()
    assert _call(scoped_host, "GET", "lab/api/workspaces", ADMIN_TOKEN)[0] == 200
    assert _call(scoped_host, "GET", "api/me", ADMIN_TOKEN)[0] == 200


def test_job_store_is_outside_root_dir_and_no_token_downloads_it(scoped_host):
    paths = host_paths(scoped_host.root)
    store = paths["db_path"]
    assert store.exists() and paths["root_dir"] not in store.parents
    relative = "../" + str(store.relative_to(scoped_host.root))
    for prefix in ("api/contents/", "files/", "view/"):
        for token in (TEAM, ADMIN_TOKEN):
            status, _, body = _call(scoped_host, "GET", prefix + relative, token)
            assert status in (302, 403, 404) and b"SQLite format" not in body, (prefix, token, status)


def test_team_token_still_reaches_the_host(scoped_host):
    status, headers, body = _call(scoped_host, "GET", "nnsight/api/status", TEAM)
    assert status == 200 and json.loads(body)["user"] == "alice"
    assert not any(c.startswith("username-") for c in headers.get_all("Set-Cookie") or [])   # no login cookie
    assert _call(scoped_host, "GET", "nnsight/api/jobs", TEAM)[0] == 200
    assert _call(scoped_host, "GET", "nnsight/api/models", TEAM)[0] == 200
    client = scoped_host.socket(TEAM)        # hello -> welcome, as alice
    client.close()
    owner = _call(scoped_host, "GET", "nnsight/api/status", ADMIN_TOKEN)
    assert json.loads(owner[2])["user"] == OWNER
    assert any(c.startswith("username-") for c in owner[1].get_all("Set-Cookie") or [])


# -- the rule and the configuration, without a running server

def test_the_rule():
    alice, owner = User(username="alice"), User(username=OWNER)
    assert may_reach(alice, AUTH_RESOURCE) and may_reach(owner, AUTH_RESOURCE)
    for resource in ("kernels", "contents", "terminals", "sessions", "server", None, ""):
        assert may_reach(owner, resource) and not may_reach(alice, resource)
    authorizer = TeamScopeAuthorizer()

    class Handler:
        class request:
            path = "/api/kernels"

    assert not authorizer.is_authorized(Handler(), alice, "execute", "kernels")
    assert authorizer.is_authorized(Handler(), alice, "execute", AUTH_RESOURCE)
    assert authorizer.is_authorized(Handler(), owner, "execute", "kernels")


@pytest.mark.parametrize("tokens,words", [
    ({"t-1": OWNER}, "server owner's name"),
    ({"": "alice"}, "non-empty string"),
    ({"t-1": ""}, "non-empty name"),
])
def test_bad_team_tokens_are_refused(tokens, words):
    with pytest.raises(TraitError, match=words):
        NNsightIdentityProvider(tokens=tokens)


_SERVER_TABLE = r"""
import json, sys
from jupyter_server.serverapp import ServerApp
from jupyter_server.base.handlers import JupyterHandler
app = ServerApp()
try:
    app.initialize(argv=sys.argv[1:])
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
    sys.exit(0)
rows = []
def walk(router):
    for rule in router.rules:
        if hasattr(rule.target, "rules"):
            walk(rule.target)
        else:
            cls = rule.target
            rows.append([rule.matcher.regex.pattern, f"{cls.__module__}.{cls.__qualname__}",
                         issubclass(cls, JupyterHandler), getattr(cls, "auth_resource", None)])
walk(app.web_app.wildcard_router)
walk(app.web_app.default_router)
authorizer = app.web_app.settings["authorizer"]
print(json.dumps({"authorizer": f"{type(authorizer).__module__}.{type(authorizer).__qualname__}", "rows": rows}))
"""


def _server_table(tmp_path, *argv: str) -> dict:
    """Initialise (not start) a ServerApp with this package's extension in a subprocess; its handlers."""
    root = tmp_path / "files"
    root.mkdir(exist_ok=True)
    env_paths = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    args = [sys.executable, "-c", _SERVER_TABLE, "--no-browser", "--port=0", f"--ServerApp.root_dir={root}",
            f"--NNsightHost.db_path={tmp_path / 'state' / 'jobs.sqlite'}", *argv]
    done = subprocess.run(args, env=dict(os.environ, **env_paths), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Handlers that are not JupyterHandlers never see a credential, so a team token gets there exactly what
# anyone gets: a redirect that drops a trailing slash, and robots.txt / favicon.ico.
PUBLIC_PLAIN_HANDLERS = {"jupyter_server.base.handlers.TrailingSlashHandler",
                         "jupyter_server.base.handlers.PublicStaticFileHandler"}


def test_every_handler_passes_the_identity_provider_and_the_scoping_authorizer_is_in_force(tmp_path):
    table = _server_table(tmp_path, f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}",
                          "--IdentityProvider.token=owner-token", '--NNsightIdentityProvider.tokens={"t-a": "alice"}')
    assert table.get("error") is None, table
    assert table["authorizer"] == "nnsight_jupyter.server.auth.TeamScopeAuthorizer"
    plain = {name for _, name, is_jupyter, _ in table["rows"] if not is_jupyter}
    assert plain == PUBLIC_PLAIN_HANDLERS
    host_handlers = {pattern for pattern, _, _, resource in table["rows"] if resource == AUTH_RESOURCE}
    assert host_handlers and all(pattern.startswith("/nnsight/") for pattern in host_handlers)
    assert {p for p, *_ in table["rows"] if p.startswith("/nnsight/")} == host_handlers
    # Handlers that never ask the authorizer (auth_resource None) are many: only the identity provider
    # closes them (JupyterLab's settings, workspaces, extension manager and build, /api/me, /metrics, ...).
    unasked = {pattern for pattern, _, is_jupyter, resource in table["rows"] if is_jupyter and resource is None}
    assert {"/lab/api/extensions$", "/lab/api/build$", "/api/me$", "/lab/api/workspaces/?$"} <= unasked


@pytest.mark.parametrize("argv,words", [
    (["--IdentityProvider.token=owner-token", "--ServerApp.authorizer_class=jupyter_server.auth.authorizer.Authorizer"],
     "needs an authorizer that scopes"),
    (["--IdentityProvider.token="], "authentication is off"),
    (["--IdentityProvider.token=t-a"], "equals the server's own token"),
])
def test_unsafe_team_configurations_do_not_start(tmp_path, argv, words):
    table = _server_table(tmp_path, f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}",
                          '--NNsightIdentityProvider.tokens={"t-a": "alice"}', *argv)
    assert table.get("error") == "UnsafeConfigError" and words in table["message"], table


def test_serve_is_a_team_host_and_lab_is_not():
    from nnsight_jupyter.cli import server_argv

    flag = f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}"
    assert flag in server_argv([], [], team=True)
    assert flag not in server_argv([], [])
    own = "--ServerApp.identity_provider_class=my.Provider"
    assert [a for a in server_argv([], [own], team=True) if "identity_provider_class" in a] == [own]


def _cookie_secret(host) -> bytes:
    """The server's cookie secret, derived as ServerApp does (no password set on the test server)."""
    import hashlib
    import hmac

    key = (host_paths(host.root)["runtime"] / "jupyter_cookie_secret").read_bytes()
    h = hmac.new(key, digestmod=hashlib.sha256)
    h.update(b"")          # ServerApp.password
    h.update(b"")          # PasswordIdentityProvider.hashed_password
    return h.digest()


def test_only_the_owner_logs_in_with_a_cookie(scoped_host):
    from tornado.web import create_signed_value

    name = f"username-127-0-0-1-{scoped_host.port}"

    def cookie_of(username: str) -> str:
        user = {"username": username, "name": username, "display_name": username, "initials": None,
                "color": None, "avatar_url": None}
        return f"{name}={create_signed_value(_cookie_secret(scoped_host), name, json.dumps(user)).decode()}"

    def with_cookie(path: str, cookie: str) -> int:
        request = urllib.request.Request(scoped_host.url + path, headers={"Cookie": cookie})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert with_cookie("api/kernels", cookie_of(OWNER)) == 200      # a well-made cookie works for the owner
    for path in ("api/kernels", "nnsight/api/status"):
        assert with_cookie(path, cookie_of("alice")) == 403           # and for nobody else, anywhere


def test_login_form_refuses_a_team_token(scoped_host):
    import http.cookiejar

    def login(password: str):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
        opener.open(scoped_host.url + "login", timeout=30).read()
        xsrf = next(c.value for c in jar if c.name == "_xsrf")
        body = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
        try:
            with opener.open(urllib.request.Request(scoped_host.url + "login", data=body), timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        return status, {c.name for c in jar}

    status, cookies = login(TEAM)
    assert status == 401 and not any(c.startswith("username-") for c in cookies)
    status, cookies = login(ADMIN_TOKEN)
    assert status == 302 and any(c.startswith("username-") for c in cookies)
