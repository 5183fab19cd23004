"""A host's adaptive policy, pure: concurrency limit, request rate, pause; simulated hosts."""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
from dataclasses import dataclass, field

import pytest

import asyncfeed as af
from asyncfeed.adaptive import ConcurrencyLimiter, HostPolicy, Outcome, RateLimiter, Ticket
from asyncfeed.adaptive.host import PAUSE_HOLDS
from asyncfeed.adaptive.limiter import HOLD_MIN

pytestmark = pytest.mark.timeout(30)


def ticket(limiter: ConcurrencyLimiter, start: float, inflight: int) -> Ticket:
    return Ticket(start, inflight, limiter.epoch, 0)


def test_a_burst_of_refusals_cuts_once_down_to_what_the_host_served() -> None:
    lim = ConcurrencyLimiter(start=64)
    for i in range(40):  # the host served 10 at a time
        lim.succeeded(ticket(lim, i * 0.01, 10), i * 0.01 + 0.1)
    old = [ticket(lim, 0.5, n) for n in range(11, 64)]
    assert lim.overloaded(old[0], 0.6, "throttled")
    assert (lim.allowed, lim.reason, lim.ceiling) == (10, "throttled", 11.0)
    assert not any(lim.overloaded(t, 0.6, "throttled") for t in old[1:])  # same epoch
    assert lim.allowed == 10
    assert lim.overloaded(ticket(lim, 0.7, 10), 0.8, "timeout")  # a new epoch cuts again
    assert lim.allowed == 9 and lim.reason == "timeout"


def test_without_a_known_served_level_the_cut_is_multiplicative() -> None:
    lim = ConcurrencyLimiter(start=100)
    assert lim.overloaded(ticket(lim, 0.0, 100), 0.1, "throttled")
    assert lim.limit == pytest.approx(90.0)
    lim2 = ConcurrencyLimiter(minimum=1, start=1)
    lim2.overloaded(ticket(lim2, 0.0, 1), 0.1, "throttled")
    assert lim2.allowed == 1  # never below the minimum


def drive(lim: ConcurrencyLimiter, start: float, seconds: float, rtt: float, bound: bool) -> float:
    """Successes every 10 ms for ``seconds``; the limit binds if ``bound``."""
    t = start
    while t < start + seconds:
        if bound:
            lim.waited()
        lim.sent(lim.allowed)
        lim.succeeded(ticket(lim, t - rtt, lim.allowed), t)
        t += 0.01
    return t


def test_slow_start_doubles_while_it_pays_and_stops_at_max() -> None:
    lim = ConcurrencyLimiter(start=4, maximum=50)
    t = 0.0
    while t < 5.0:  # a host as fast as we let it: all allowed answer each 20 ms round
        lim.waited()
        lim.sent(lim.allowed)
        for _ in range(lim.allowed):
            lim.succeeded(ticket(lim, t, lim.allowed), t + 0.02)
        t += 0.02
    assert lim.allowed == 50 and lim.reason == "max"


def test_slow_start_ends_when_more_in_flight_brings_no_more_answers() -> None:
    lim = ConcurrencyLimiter(start=4, maximum=512)
    drive(lim, 0.0, 0.6, 0.02, bound=True)  # 60 completions: one update
    assert lim.allowed == 8 and lim.reason == "probing"
    drive(lim, 1.0, 3.0, 0.02, bound=True)  # 100 answers/s whatever the limit
    assert lim.allowed < 64 and lim.reason == "hold" and lim.ceiling is not None


def test_after_a_cut_the_limit_climbs_back_below_the_ceiling_then_holds() -> None:
    lim = ConcurrencyLimiter(start=20)
    lim.overloaded(ticket(lim, 0.0, 20), 0.0, "throttled")  # 18, ceiling 20
    t = drive(lim, 0.0, 1.0, 0.02, bound=True)
    assert lim.allowed == 19 and lim.reason == "probing"  # just under the ceiling
    t = drive(lim, t, 0.5, 0.02, bound=True)
    assert lim.reason == "hold" and lim.allowed == 19
    drive(lim, t, HOLD_MIN + 1, 0.02, bound=True)
    assert lim.allowed >= 20  # probed after the hold


def test_the_same_level_failing_again_doubles_the_hold() -> None:
    lim = ConcurrencyLimiter(start=20)
    lim.overloaded(ticket(lim, 0.0, 20), 0.0, "throttled")
    first = lim._hold_until
    lim.overloaded(ticket(lim, 1.0, 20), 1.0, "throttled")
    assert lim._hold_until - 1.0 == pytest.approx(2 * (first - 0.0))


def test_latency_far_over_the_baseline_cuts_the_limit() -> None:
    lim = ConcurrencyLimiter(start=40)
    t = drive(lim, 0.0, 1.2, 0.01, bound=False)  # baseline 10 ms
    before = lim.limit
    drive(lim, t, 1.2, 0.05, bound=False)  # 50 ms: five times the baseline
    assert lim.reason == "latency" and lim.limit < before


def test_a_limit_far_above_what_is_used_shrinks() -> None:
    lim = ConcurrencyLimiter(start=100)
    t = 0.0
    for _ in range(400):  # 3 in flight at most, never waiting
        lim.sent(3)
        t += 0.1
        lim.succeeded(ticket(lim, t - 0.01, 3), t)
    assert lim.reason == "idle" and lim.allowed == 6


def test_rate_limiter_is_off_until_throttled_then_paces_and_recovers() -> None:
    rate = RateLimiter()
    assert rate.delay(0.0) == 0.0 and rate.fill == math.inf
    for i in range(100):
        rate.take(i / 100)  # 100/s
    assert rate.throttled(0, 1.0) and not rate.throttled(0, 1.0)  # once per epoch
    assert rate.fill == pytest.approx(70.0, rel=0.05) and rate.reason == "throttled"
    assert rate.delay(1.0) == pytest.approx(1 / rate.fill)  # an empty bucket
    assert rate.delay(1.0 + 1.1 / rate.fill) == 0.0
    t = 1.0
    while t < 10.0:  # successes at the paced rate: back to the old maximum, then beyond
        wait = rate.delay(t)
        t += wait
        rate.take(t)
        rate.succeeded(t)
    assert rate.fill > 100.0 and rate.reason == "probing"


def test_policy_attributes_refusals_to_concurrency_or_rate() -> None:
    pol = HostPolicy(af.Adaptive(start=8))
    t = 0.0
    for _ in range(40):  # the host serves 4 at once
        tickets = [pol.start(t, n) for n in range(4)]
        t += 0.05
        for tk in tickets:
            pol.finish(tk, t, Outcome.OK)
    over = pol.start(t, 6)  # the 7th in flight refused: concurrency
    pol.finish(over, t, Outcome.THROTTLED)
    assert pol.concurrency.reason == "throttled" and not pol.rate.enabled
    under = pol.start(t, 1)  # the 2nd in flight refused: rate
    pol.finish(under, t + 0.001, Outcome.THROTTLED)
    assert pol.rate.enabled and pol.rate.reason == "throttled"
    snap = pol.snapshot(t)
    assert snap["limit"] == pol.concurrency.allowed and snap["rate_limit"] == pol.rate.fill


def test_a_bare_503_below_the_served_level_is_an_error_not_a_signal() -> None:
    pol = HostPolicy(af.Adaptive(start=8))
    t = 0.0
    for _ in range(40):  # the host serves 4 at once
        tickets = [pol.start(t, n) for n in range(4)]
        t += 0.05
        for tk in tickets:
            pol.finish(tk, t, Outcome.OK)
    limit = pol.concurrency.limit
    pol.finish(pol.start(t, 2), t, Outcome.UNAVAILABLE)  # a random 503
    assert pol.concurrency.limit == limit and not pol.rate.enabled
    pol.finish(pol.start(t, 2), t, Outcome.UNAVAILABLE, retry_after=1.0)  # "overloaded"
    assert pol.concurrency.limit < limit and pol.delay(t, 0) == pytest.approx(1.0)
    pol.finish(pol.start(t + 2, 6), t + 2, Outcome.UNAVAILABLE)  # above what it served
    assert pol.concurrency.reason == "throttled" and pol.throttles == 3
    before = pol.concurrency.limit
    pol.finish(pol.start(t + 3, 1), t + 3, Outcome.TIMEOUT)
    assert pol.concurrency.limit < before and pol.concurrency.reason == "timeout"


def test_retry_after_pauses_every_request_of_the_host() -> None:
    pol = HostPolicy()
    tk = pol.start(0.0, 0)
    pol.finish(tk, 1.0, Outcome.THROTTLED, retry_after=2.0)
    assert pol.delay(1.5, 0) == pytest.approx(1.5)
    assert pol.snapshot(1.5)["limit_reason"] == "paused"
    assert pol.delay(3.0, 0) == 0.0
    assert pol.delay(3.0, pol.concurrency.allowed) is None  # full: wait for a slot


def test_a_probe_that_cost_a_pause_is_not_repeated_for_several_pauses() -> None:
    pol = HostPolicy(af.Adaptive(start=20))
    lim = pol.concurrency
    pol.finish(pol.start(0.0, 19), 0.0, Outcome.THROTTLED, retry_after=1.0)  # over 20
    assert lim.ceiling == 20 and lim._hold_until == pytest.approx(PAUSE_HOLDS * 1.0)
    t = drive(lim, 1.0, PAUSE_HOLDS - 1.5, 0.02, bound=True)
    assert lim.allowed == 19 and lim.reason == "hold"  # under the ceiling, no probe yet
    drive(lim, t, 1.5, 0.02, bound=True)
    assert lim.allowed >= 20  # probed once the hold passed


# -- simulated hosts ---------------------------------------------------------------------


@dataclass
class Sim:
    """A client with endless demand in front of one simulated host."""

    policy: HostPolicy
    events: list[tuple[float, int, Ticket | None, bool]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    inflight: int = 0
    log: list[tuple[float, bool, int]] = field(default_factory=list)  # (t, refused, limit)

    def run(self, until: float, answer: object) -> None:
        now, wake = 0.0, -1.0
        while now < until:
            while True:
                delay = self.policy.delay(now, self.inflight)
                if delay is None:
                    break
                if delay > 0:
                    if wake <= now:  # one timer at a time, as the gate has
                        wake = now + delay
                        heapq.heappush(self.events, (wake, next(self.seq), None, False))
                    break
                sent = self.policy.start(now, self.inflight)
                self.inflight += 1
                refused, took = answer(now, self.inflight)  # type: ignore[operator]
                heapq.heappush(self.events, (now + took, next(self.seq), sent, refused))
            now, _, tk, refused = heapq.heappop(self.events)
            if tk is not None:
                self.inflight -= 1
                outcome = Outcome.THROTTLED if refused else Outcome.OK
                self.policy.finish(tk, now, outcome, retry_after=None)
                self.log.append((now, refused, self.policy.concurrency.allowed))


def test_simulated_concurrency_limited_host_converges_within_a_quarter_of_k() -> None:
    k, latency = 12, 0.02
    serving = [0]
    pending: list[float] = []

    def answer(now: float, inflight: int) -> tuple[bool, float]:
        while pending and pending[0] <= now:
            heapq.heappop(pending)
            serving[0] -= 1
        if serving[0] >= k:
            return True, 0.0005
        serving[0] += 1
        took = latency * (1 + 0.5 * serving[0] / k)
        heapq.heappush(pending, now + took)
        return False, took

    sim = Sim(HostPolicy(af.Adaptive(start=64)))
    sim.run(60.0, answer)
    late = [(t, refused, limit) for t, refused, limit in sim.log if t > 20.0]
    assert 0.75 * k <= statistics.median(limit for _, _, limit in late) <= 1.25 * k
    assert all(0.75 * k <= limit <= 1.25 * k for _, _, limit in late)
    assert sum(refused for _, refused, _ in late) / len(late) < 0.02


def test_simulated_rate_limited_fast_host_is_paced_near_its_rate() -> None:
    rate, latency = 200.0, 0.002
    bucket = [rate, 0.0]  # tokens, last refill

    def answer(now: float, inflight: int) -> tuple[bool, float]:
        bucket[0] = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1:
            return True, 0.0005
        bucket[0] -= 1
        return False, latency

    sim = Sim(HostPolicy())
    sim.run(30.0, answer)
    refused = sum(r for _, r, _ in sim.log)
    served = len(sim.log) - refused
    assert refused / len(sim.log) < 0.10
    assert served / 30.0 >= 0.75 * rate  # near the allowed rate, not far below it
