"""Who a request belongs to.

A plain Jupyter server has one owner: whoever holds its token or its login cookie; every job on it
belongs to the owner ``"owner"``. A host shared by a team names its users by token:

    c.ServerApp.identity_provider_class = "nnsight_jupyter.server.auth.NNsightIdentityProvider"
    c.NNsightIdentityProvider.tokens = {"<alice's token>": "alice", "<bob's token>": "bob"}

Each token then authenticates as its user (the server's own token still works, as "owner"), so
queues, co-tenant batching and job ownership see distinct users.
"""

from __future__ import annotations

import hmac
from typing import Any

from jupyter_server.auth.identity import PasswordIdentityProvider, User
from traitlets import Dict

OWNER = "owner"


class NNsightIdentityProvider(PasswordIdentityProvider):
    """Jupyter's token/password login, plus per-user tokens for a shared model host."""

    tokens = Dict({}, config=True, help="Map of token -> user name for the users of a shared host.")

    async def get_user_token(self, handler: Any) -> User | None:
        given = self.get_token(handler)
        if given:
            for token, name in self.tokens.items():
                if hmac.compare_digest(given.encode(), str(token).encode()):
                    return User(username=str(name), name=str(name), display_name=str(name))
        return await super().get_user_token(handler)

    def generate_anonymous_user(self, handler: Any) -> User:
        return User(username=OWNER, name=OWNER, display_name="Owner of this server")


def owner_of(handler: Any) -> str:
    """The job owner of an authenticated request."""
    if isinstance(handler.identity_provider, NNsightIdentityProvider):
        return str(handler.current_user.username)
    return OWNER
