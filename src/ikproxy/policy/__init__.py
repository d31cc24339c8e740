"""What a browser may ask for, and who may ask: the policy every surface applies.

`Policy` gathers the options (`ikproxy.policy.config`); `Param` and models
declare the parameters (`ikproxy.policy.params`); `TokenBucket` limits the
rate of runs (`ikproxy.policy.limits`, with rates in words: `"3/minute"`);
`ikproxy.policy.checks` checks each option when a policy is made. `HTTPError`,
`AccessDenied` and `PolicyError` live with every other error in
`ikproxy.errors` and are re-exported here.
"""

from __future__ import annotations

from ikproxy.errors import AccessDenied, HTTPError, PolicyError
from ikproxy.policy.config import Authorize, Policy, policy_problems
from ikproxy.policy.limits import RateLimiter, SharedTokenBucket, TokenBucket
from ikproxy.policy.params import Param

__all__ = [
    "AccessDenied",
    "Authorize",
    "HTTPError",
    "Param",
    "Policy",
    "PolicyError",
    "RateLimiter",
    "SharedTokenBucket",
    "TokenBucket",
    "policy_problems",
]
