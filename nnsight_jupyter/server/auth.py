"""Who a request belongs to, and what a team token may reach.

A plain Jupyter server has one owner: whoever holds its token or its login cookie; every job on it
belongs to the owner ``"owner"``. A host shared by a team names its users by token:

    c.ServerApp.identity_provider_class = "nnsight_jupyter.server.auth.NNsightIdentityProvider"
    c.NNsightIdentityProvider.tokens = {"<alice's token>": "alice", "<bob's token>": "bob"}

Each token then authenticates as its user (the server's own token and password still work, as
"owner"), so queues, co-tenant batching and job ownership see distinct users.

A team token reaches the model host and nothing else. One rule, `may_reach`, says so: the owner
reaches every resource, a team user only `AUTH_RESOURCE` ("nnsight"). It is applied at both of
Jupyter's gates:

* authentication (`NNsightIdentityProvider.get_user`), which every Jupyter handler passes through
  in `JupyterHandler.prepare`, including those that never ask the authorizer (JupyterLab's pages,
  settings, workspaces and extension manager, /api/me, /metrics, static files, the 404 page): off
  the handlers whose ``auth_resource`` is "nnsight", a team token is no credential at all, so the
  request is answered as an anonymous one (403, or a redirect to the login page);
* authorization (`TeamScopeAuthorizer.is_authorized`), which handlers with ``@authorized`` ask.

`NNsightIdentityProvider.validate_security` (run by the server at start) puts the scoping
authorizer in force when none was configured, and refuses to start the server under any other
authorizer, or with team tokens on a server whose own authentication is off. Team users never get a
login cookie (their token goes with each request), and a cookie authenticates the owner only.
"""

from __future__ import annotations

import hmac
import inspect
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer
from jupyter_server.auth.identity import PasswordIdentityProvider, User
from traitlets import Dict, TraitError, validate

from ..errors import NNsightError

OWNER = "owner"
AUTH_RESOURCE = "nnsight"
TEAM_RESOURCES: frozenset[str] = frozenset({AUTH_RESOURCE})


class UnsafeConfigError(NNsightError):
    """The server's configuration would let a team token (or anyone) reach more than the model host."""


def may_reach(user: User, resource: str | None) -> bool:
    """The one rule: the server's owner reaches every resource; any other user only the host's."""
    return user.username == OWNER or resource in TEAM_RESOURCES


class TeamScopeAuthorizer(Authorizer):
    """Jupyter's authorizer for a team host: team users may use the "nnsight" resource only."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        allowed = may_reach(user, resource)
        if not allowed:
            self.log.warning("nnsight: team user %r refused %s on %r (%s)", user.username, action, resource,
                             handler.request.path)
        return allowed


class NNsightIdentityProvider(PasswordIdentityProvider):
    """Jupyter's token/password login, plus per-user team tokens that reach only the model host."""

    tokens = Dict({}, config=True, help="Map of token -> user name for the users of a shared host. "
                  "A team token reaches only the nnsight endpoints; the server's own token reaches everything.")

    @validate("tokens")
    def _check_tokens(self, proposal: Any) -> dict:
        value = proposal["value"]
        for token, name in value.items():
            if not isinstance(token, str) or not token:
                raise TraitError(f"NNsightIdentityProvider.tokens: every token must be a non-empty string, "
                                 f"got {token!r} (for user {name!r})")
            if not isinstance(name, str) or not name.strip():
                raise TraitError(f"NNsightIdentityProvider.tokens: the user of a token must be a non-empty "
                                 f"name, got {name!r}")
            if name == OWNER:
                raise TraitError(f"NNsightIdentityProvider.tokens: {OWNER!r} is the server owner's name (its own "
                                 "token and password); give team users other names")
        return value

    # -- who is asking
    async def get_user(self, handler: Any) -> User | None:
        """The user of a request, or None (not authenticated) for a team user off the host's handlers."""
        user = await self._get_user(handler)
        if user is not None and not may_reach(user, getattr(handler, "auth_resource", None)):
            self.log.warning("nnsight: the team token of %r is no credential for %s (team tokens reach only "
                             "the nnsight endpoints)", user.username, handler.request.path)
            handler._token_authenticated = False   # set by Jupyter's _get_user: no token counts here
            return None
        return user

    async def get_user_token(self, handler: Any) -> User | None:
        given = self.get_token(handler)
        if given:
            for token, name in self.tokens.items():
                if hmac.compare_digest(given.encode(), token.encode()):
                    return User(username=name, name=name, display_name=name)
        return await super().get_user_token(handler)

    async def get_user_cookie(self, handler: Any) -> User | None:
        """Only the owner logs in with a cookie; any other cookie user is not authenticated."""
        user = super().get_user_cookie(handler)
        if inspect.isawaitable(user):
            user = await user
        return user if user is not None and user.username == OWNER else None

    def set_login_cookie(self, handler: Any, user: User) -> None:
        if user.username == OWNER:     # team users send their token with every request
            super().set_login_cookie(handler, user)

    def generate_anonymous_user(self, handler: Any) -> User:
        return User(username=OWNER, name=OWNER, display_name="Owner of this server")

    # -- at server start
    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        """Put `TeamScopeAuthorizer` in force (or refuse to start); refuse team tokens without authentication."""
        super().validate_security(app, ssl_options)
        if self.tokens and not self.auth_enabled:
            raise UnsafeConfigError(
                "NNsightIdentityProvider.tokens are set but the server's own authentication is off (no token, "
                "no password): every anonymous request would be the owner. Set IdentityProvider.token or a password.")
        if self.token and any(hmac.compare_digest(self.token.encode(), t.encode()) for t in self.tokens):
            raise UnsafeConfigError("a team token in NNsightIdentityProvider.tokens equals the server's own token, "
                                    "which reaches everything: give every team user a token of their own")
        settings = app.web_app.settings
        authorizer = settings.get("authorizer")
        if authorizer is None or type(authorizer) is AllowAllAuthorizer:   # Jupyter's default: none configured
            authorizer = TeamScopeAuthorizer(parent=app, log=app.log, identity_provider=self)
            app.authorizer = settings["authorizer"] = authorizer
        elif not isinstance(authorizer, TeamScopeAuthorizer):
            raise UnsafeConfigError(
                f"NNsightIdentityProvider needs an authorizer that scopes team tokens to the model host, but "
                f"ServerApp.authorizer_class is {type(authorizer).__module__}.{type(authorizer).__qualname__}: "
                "leave it unset, or use nnsight_jupyter.server.auth.TeamScopeAuthorizer (or a subclass)")


def owner_of(handler: Any) -> str:
    """The job owner of an authenticated request."""
    if isinstance(handler.identity_provider, NNsightIdentityProvider):
        return str(handler.current_user.username)
    return OWNER
