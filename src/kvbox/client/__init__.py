"""HTTP client for the key-value-store endpoints of kvbox (and of the Apify API v2).

`KvboxClient` and `KvboxClientAsync` are twins: the same calls, one blocking and one async.
"""

from kvbox.client._async import KvboxClientAsync, StoreClientAsync, StoreCollectionClientAsync
from kvbox.client._base import DEFAULT_API_URL, RetryPolicy
from kvbox.client._errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    InvalidResponseBodyError,
    KvboxClientError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    RateLimitError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnsupportedContentEncodingError,
)
from kvbox.client._sync import KvboxClient, StoreClient, StoreCollectionClient
from kvbox.client.models import (
    ExpiryRule,
    Grant,
    KeyItem,
    KeyList,
    Record,
    RecordStream,
    StoreInfo,
    StoreList,
    UserInfo,
)
from kvbox.client.webhooks import Change, ChangeList, DeliveryAttempt, Webhook, verify_signature
from kvbox.core.sentinels import UNSET

__all__ = [
    "DEFAULT_API_URL",
    "UNSET",
    "ApiError",
    "Change",
    "ChangeList",
    "ConflictError",
    "DeliveryAttempt",
    "ExpiryRule",
    "ForbiddenError",
    "Grant",
    "InvalidRequestError",
    "InvalidResponseBodyError",
    "KeyItem",
    "KeyList",
    "KvboxClient",
    "KvboxClientAsync",
    "KvboxClientError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "RangeNotSatisfiableError",
    "RateLimitError",
    "Record",
    "RecordStream",
    "RetryPolicy",
    "ServerError",
    "StoreClient",
    "StoreClientAsync",
    "StoreCollectionClient",
    "StoreCollectionClientAsync",
    "StoreInfo",
    "StoreList",
    "TransportError",
    "UnauthorizedError",
    "UnsupportedContentEncodingError",
    "UserInfo",
    "Webhook",
    "verify_signature",
]
