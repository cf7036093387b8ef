"""One error type for every hub command, and plain-language translations of huggingface_hub's errors."""
from __future__ import annotations


class HubError(RuntimeError):
    """A problem the user can fix; the message says what went wrong and what to do."""


_LOGIN = 'log in with `hf auth login` (or set the HF_TOKEN environment variable) using a token with write access'


def _is_network_error(e: BaseException) -> bool:
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    # huggingface_hub's HTTP backend (httpx / requests) raises its own transport errors
    return any(c.__module__.split('.')[0] in ('httpx', 'httpx2', 'requests', 'urllib3')
               and c.__name__ in ('RequestError', 'TransportError', 'ConnectionError', 'Timeout', 'TimeoutException')
               for c in type(e).__mro__)


def explain_hub_error(e: BaseException, action: str, repo_id: str) -> HubError:
    """A :class:`HubError` naming the cause of a failed Hub call and the fix (the token is never included)."""
    from huggingface_hub import errors as hf

    if isinstance(e, hf.OfflineModeIsEnabled):
        return HubError(f'cannot {action} {repo_id}: HF_HUB_OFFLINE=1 is set, so huggingface_hub makes no network '
                        f'calls. Unset HF_HUB_OFFLINE (and make sure this machine can reach the Hub) and try again.')
    if isinstance(e, hf.LocalEntryNotFoundError):
        return HubError(f'cannot {action} {repo_id}: the files are not in the local HF cache and the Hub cannot be '
                        f'reached (offline or HF_HUB_OFFLINE=1). Run `python -m hub pull {repo_id}` on a machine '
                        f'with network access and copy the cache (HF_HUB_CACHE) here.')
    if isinstance(e, hf.GatedRepoError):
        return HubError(f'cannot {action} {repo_id}: the repository is gated; accept its terms on the Hub page '
                        f'and {_LOGIN}.')
    if isinstance(e, hf.RevisionNotFoundError):
        return HubError(f'cannot {action} {repo_id}: the revision does not exist; check --revision.')
    if isinstance(e, hf.RepositoryNotFoundError):
        return HubError(f'cannot {action} {repo_id}: the repository does not exist or your token cannot see it '
                        f'(private). Check the name, or {_LOGIN}.')
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        if status == 401:
            return HubError(f'cannot {action} {repo_id}: not authorised (HTTP 401: no token or an invalid one); '
                            f'{_LOGIN}.')
        if status == 403:
            return HubError(f'cannot {action} {repo_id}: forbidden (HTTP 403): the token has no write access to '
                            f'this namespace; use a write token of a member of {repo_id.split("/")[0]!r}.')
        return HubError(f'cannot {action} {repo_id}: the Hub answered with an error ({e}).')
    if _is_network_error(e):
        return HubError(f'cannot {action} {repo_id}: the Hub cannot be reached ({type(e).__name__}: {e}). Check the '
                        f'network connection or proxy settings; to work offline, pull the repository beforehand '
                        f'and set HF_HUB_OFFLINE=1.')
    return HubError(f'cannot {action} {repo_id}: {type(e).__name__}: {e}')
