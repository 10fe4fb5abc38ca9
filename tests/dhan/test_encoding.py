"""Request encoding: batching to the configured per-message limit, Dhan's exact JSON, parsing back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickgate.config import FeedLimits, Settings, get_settings
from tickgate.dhan.protocol import (
    DisconnectRequest,
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    RequestError,
    SubscriptionRequest,
    disconnect_message,
    parse_request,
    subscribe_messages,
    unsubscribe_messages,
)

keys_strategy = st.lists(
    st.builds(InstrumentKey, st.sampled_from(list(ExchangeSegment)), st.integers(0, 2**32 - 1)),
    max_size=450,
)


def _keys(n: int, segment: ExchangeSegment = ExchangeSegment.NSE_FNO) -> list[InstrumentKey]:
    return [InstrumentKey(segment, 40000 + i) for i in range(n)]


def test_250_keys_make_three_messages_of_at_most_100() -> None:
    messages = [json.loads(m) for m in subscribe_messages(FeedMode.QUOTE, _keys(250))]
    assert [m["InstrumentCount"] for m in messages] == [100, 100, 50]
    assert all(len(m["InstrumentList"]) == m["InstrumentCount"] for m in messages)
    sent = [item["SecurityId"] for m in messages for item in m["InstrumentList"]]
    assert sent == [str(40000 + i) for i in range(250)]


def test_json_shape_is_exactly_dhans() -> None:
    key = InstrumentKey(ExchangeSegment.NSE_EQ, 1333)
    (message,) = subscribe_messages(FeedMode.TICKER, [key])
    decoded = json.loads(message)
    assert list(decoded) == ["RequestCode", "InstrumentCount", "InstrumentList"]
    assert decoded == {
        "RequestCode": 15,
        "InstrumentCount": 1,
        "InstrumentList": [{"ExchangeSegment": "NSE_EQ", "SecurityId": "1333"}],
    }
    assert isinstance(decoded["InstrumentList"][0]["SecurityId"], str)


@pytest.mark.parametrize("mode", list(FeedMode))
def test_unsubscribe_code_is_subscribe_plus_one(mode: FeedMode) -> None:
    keys = _keys(3)
    (sub,) = subscribe_messages(mode, keys)
    (unsub,) = unsubscribe_messages(mode, keys)
    assert json.loads(unsub)["RequestCode"] == json.loads(sub)["RequestCode"] + 1
    assert json.loads(unsub)["InstrumentList"] == json.loads(sub)["InstrumentList"]


def test_duplicates_in_one_call_are_sent_once() -> None:
    a, b = _keys(2)
    messages = [json.loads(m) for m in subscribe_messages(FeedMode.FULL, [a, b, a, a, b])]
    assert [m["InstrumentCount"] for m in messages] == [2]
    assert [i["SecurityId"] for i in messages[0]["InstrumentList"]] == [
        str(a.security_id),
        str(b.security_id),
    ]


def test_empty_key_list_sends_nothing() -> None:
    assert list(subscribe_messages(FeedMode.FULL, [])) == []


def test_batch_size_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKGATE_LIMITS__INSTRUMENTS_PER_MESSAGE", "40")
    get_settings.cache_clear()
    try:
        assert get_settings().limits.instruments_per_message == 40
        counts = [json.loads(m)["InstrumentCount"] for m in subscribe_messages(FeedMode.QUOTE, _keys(100))]
        assert counts == [40, 40, 20]
    finally:
        get_settings.cache_clear()


def test_default_limits_are_dhans() -> None:
    limits = Settings().limits
    assert (limits.sockets_per_account, limits.instruments_per_socket, limits.instruments_per_message) == (
        5,
        5000,
        100,
    )
    assert limits.total_capacity == 25_000
    assert FeedLimits(sockets_per_account=2, instruments_per_socket=10).total_capacity == 20


@given(keys_strategy, st.integers(1, 120), st.sampled_from(list(FeedMode)), st.booleans())
def test_messages_parse_back_to_the_unique_keys(
    keys: list[InstrumentKey], per_message: int, mode: FeedMode, subscribe: bool
) -> None:
    encode = subscribe_messages if subscribe else unsubscribe_messages
    requests = [parse_request(m) for m in encode(mode, keys, per_message=per_message)]
    assert all(isinstance(r, SubscriptionRequest) for r in requests)
    assert all(0 < len(r.keys) <= per_message for r in requests)  # type: ignore[union-attr]
    assert all(r.mode is mode and r.subscribe is subscribe for r in requests)  # type: ignore[union-attr]
    assert [k for r in requests for k in r.keys] == list(dict.fromkeys(keys))  # type: ignore[union-attr]


def test_disconnect_message() -> None:
    assert json.loads(disconnect_message()) == {"RequestCode": 12}
    assert parse_request(disconnect_message()) == DisconnectRequest()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"RequestCode": "15"}', "integer RequestCode"),
        ('{"RequestCode": 99, "InstrumentList": []}', "99"),
        ('{"RequestCode": 15}', "InstrumentList must be a list"),
        ('{"RequestCode": 15, "InstrumentList": [1]}', r"InstrumentList\[0\] must be an object"),
        (
            '{"RequestCode": 15, "InstrumentList": [{"ExchangeSegment": "NSE_EQ", "SecurityId": 1}]}',
            "numeric string",
        ),
        (
            '{"RequestCode": 15, "InstrumentList": [{"ExchangeSegment": "XX", "SecurityId": "1"}]}',
            "unknown exchange",
        ),
    ],
)
def test_bad_requests_are_named(text: str, reason: str) -> None:
    with pytest.raises(RequestError, match=reason):
        parse_request(text)
