"""The one-round-trip record path (`read_record_as`, `put_record_as`) for indexes that
answer from their own process: the same lookups as the service would make, one by one.

PostgreSQL answers both in one statement each (postgres/metadata.py); these are the
reference the contract suite holds it to.
"""

from __future__ import annotations

from kvbox.backends.base import MetadataIndex
from kvbox.core.models import Grant, Sighting, Store, StoreLookup, Token, WriteBasis


async def sight(
    index: MetadataIndex, token_hash: str | None, user_id: str | None, lookup: StoreLookup, key: str
) -> Sighting:
    """The rows `read_record_as` returns, read one by one."""
    token = await index.get_token_by_hash(token_hash) if token_hash is not None else None
    if token_hash is not None:
        user = await index.get_user(token.user_id) if token is not None else None
    else:
        user = await index.get_user(user_id) if user_id is not None else None
    store = await _find(index, user.id if user is not None else None, lookup)
    if store is None:
        return Sighting(token, user, None, None, None, None)
    owner = user if user is not None and user.id == store.user_id else await index.get_user(store.user_id)
    grant = None
    if user is not None and user.id != store.user_id:
        grant = await index.get_grant(store.id, user.id)
    return Sighting(token, user, store, owner, grant, await index.get_record(store.id, key))


async def _find(index: MetadataIndex, user_id: str | None, lookup: StoreLookup) -> Store | None:
    if lookup.store_id is not None:
        return await index.get_store(lookup.store_id)
    if lookup.owner is None:
        owner_id = user_id
    else:
        owner = await index.get_user_by_name(lookup.owner) or await index.get_user(lookup.owner)
        owner_id = owner.id if owner is not None else None
    if owner_id is None:
        return None
    return await index.get_store_by_name(owner_id, lookup.name or "")


def basis_holds(
    basis: WriteBasis, store: Store | None, token: Token | None, user_exists: bool, grant: Grant | None
) -> bool:
    """Whether the rows read now (`store` by ID, `token` by the basis's hash, whether its user
    exists, the grant of the basis's user on the store) are those the write was decided on."""
    if store is None or store.record_expiry != basis.record_expiry:
        return False
    if basis.name is not None and store.name != basis.name:
        return False
    if basis.token_hash is None:
        return True
    return token is not None and token == basis.token and user_exists and _same_grant(grant, basis.grant)


def _same_grant(now: Grant | None, then: Grant | None) -> bool:
    if now is None or then is None:
        return now is then
    return now.permission == then.permission
