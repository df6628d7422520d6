"""DSN parsing: the scheme picks the backend, options are checked, passwords stay hidden."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from power_loop import ConnectOptions, InvalidDSNError, MissingDriverError, open_store
from power_loop.store import redact_dsn
from power_loop.store.dsn import load_backend, parse_dsn

SECRET = "pa55-w0rd"


# -- SQLite ----------------------------------------------------------------------------


@pytest.mark.parametrize(("dsn", "location"), [
    ("app.db", "app.db"),
    ("data/app.db", "data/app.db"),
    ("/var/lib/app.db", "/var/lib/app.db"),
    (":memory:", ":memory:"),
    ("sqlite:///relative.db", "relative.db"),
    ("sqlite:///dir/relative.db", "dir/relative.db"),
    ("sqlite:////absolute/app.db", "/absolute/app.db"),
    ("SQLite:///case.db", "case.db"),
    ("sqlite3:///alias.db", "alias.db"),
])
def test_sqlite_locations(dsn: str, location: str) -> None:
    parsed = parse_dsn(dsn)
    assert parsed.backend.name == "sqlite"
    assert parsed.location == location
    assert parsed.options == ConnectOptions()


def test_a_bare_path_keeps_its_question_mark() -> None:
    # '?' is a legal file name character, so a bare path takes no query string.
    assert parse_dsn("odd?name.db").location == "odd?name.db"


def test_sqlite_options_from_the_query() -> None:
    parsed = parse_dsn("sqlite:///app.db?busy_timeout=5&synchronous=FULL&readers=4")
    assert parsed.options.busy_timeout == 5.0
    assert parsed.options.synchronous == "full"
    assert parsed.options.readers == 4


@pytest.mark.parametrize("dsn", ["sqlite://host/app.db", "sqlite:///", "sqlite://"])
def test_sqlite_dsn_needs_a_path_and_no_host(dsn: str) -> None:
    with pytest.raises(InvalidDSNError):
        parse_dsn(dsn)


# -- PostgreSQL and MySQL --------------------------------------------------------------


@pytest.mark.parametrize(("dsn", "engine"), [
    ("postgresql://u@db.example/app", "postgresql"),
    ("postgres://u@db.example/app", "postgresql"),
    ("mysql://u@db.example/app", "mysql"),
    ("mariadb://u@db.example/app", "mysql"),
])
def test_network_schemes(dsn: str, engine: str) -> None:
    parsed = parse_dsn(dsn)
    assert parsed.backend.name == engine
    assert parsed.location == dsn


def test_own_options_are_taken_out_and_driver_options_kept() -> None:
    parsed = parse_dsn(
        f"postgresql://u:{SECRET}@h:5432/app?pool_max_size=20&sslmode=require&connect_timeout=3")
    assert parsed.options.pool_max_size == 20
    assert parsed.options.connect_timeout == 3.0
    assert dict(parsed.extra) == {"sslmode": "require"}
    assert parsed.location == f"postgresql://u:{SECRET}@h:5432/app?sslmode=require"


def test_keyword_overrides_win_over_the_query() -> None:
    dsn = "mysql://u@h/app?pool_min_size=2&pool_max_size=20&command_timeout=9"
    parsed = parse_dsn(dsn, pool_max_size=5, command_timeout=None)
    assert parsed.options.pool_max_size == 5
    assert parsed.options.pool_min_size == 2
    assert parsed.options.command_timeout == 9.0  # None means "not given"


# -- rejected DSNs ---------------------------------------------------------------------


@pytest.mark.parametrize("dsn", [
    "sqlite:///app.db?bogus=1",                    # unknown to the sqlite backend
    "sqlite:///app.db?pool_max_size=3",            # a network option on sqlite
    "postgresql://h/app?busy_timeout=3",           # a sqlite option on postgres
    "mysql://h/app?readers=2",
])
def test_options_a_backend_does_not_understand(dsn: str) -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn(dsn)
    assert caught.value.code == "invalid_dsn"
    assert "not understood" in caught.value.message


def test_unknown_keyword_option() -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn("app.db", bogus=1)
    assert caught.value.code == "invalid_dsn"
    assert "busy_timeout" in caught.value.message  # the options it could have meant


@pytest.mark.parametrize(("dsn", "known"), [
    # A typo or an unknown name: never passed on to the server (asyncpg would send it
    # as a server setting, which fails later as an obscure store_error).
    ("postgresql://h/app?sslmod=require", "sslmode"),
    ("postgresql://h/app?bogus=1", "target_session_attrs"),
    ("postgresql://h/app?statement_timeout=5", "command_timeout"),
    ("mysql://h/app?unix_sock=/run/mysqld.sock", "unix_socket"),
    ("mysql://h/app?ssl=true", "pool_max_size"),
])
def test_unknown_options_are_refused_with_the_known_ones(dsn: str, known: str) -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn(dsn)
    assert caught.value.code == "invalid_dsn"
    name = dsn.split("?")[1].split("=")[0]
    assert f"option {name!r} is not understood" in caught.value.message
    assert known in caught.value.message.split("it accepts: ")[1].split(", ")


async def test_an_unknown_option_fails_before_connecting() -> None:
    # The host does not resolve: only a parse-time refusal can answer this fast and
    # say which option is wrong.
    with pytest.raises(InvalidDSNError) as caught:
        await open_store("postgresql://u@no-such-host.invalid/app?bogus=1")
    assert "'bogus'" in caught.value.message


@pytest.mark.parametrize("dsn", [
    "postgresql://h/app?sslmode=require&target_session_attrs=read-write&passfile=/p",
    "postgresql://h/app?application_name=worker%201",
    "mysql://h/app?unix_socket=/run/mysqld/mysqld.sock",
])
def test_the_drivers_own_options_pass_through(dsn: str) -> None:
    assert dict(parse_dsn(dsn).extra) == dict(parse_qsl(urlsplit(dsn).query))


@pytest.mark.parametrize("dsn", [
    "postgresql://h/app?pool_max_size=abc",
    "postgresql://h/app?pool_max_size=0",
    "postgresql://h/app?pool_min_size=-1",
    "postgresql://h/app?connect_timeout=0",
    "mysql://h/app?command_timeout=-5",
    "sqlite:///app.db?busy_timeout=never",
    "sqlite:///app.db?synchronous=sometimes",
    "sqlite:///app.db?readers=0",
])
def test_bad_option_values(dsn: str) -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn(dsn)
    assert "is not valid" in caught.value.message


def test_bad_keyword_value() -> None:
    with pytest.raises(InvalidDSNError):
        parse_dsn("postgresql://h/app", pool_max_size="many")


def test_pool_min_above_max() -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn("postgresql://h/app?pool_min_size=5&pool_max_size=2")
    assert "pool_min_size=5 exceeds pool_max_size=2" in caught.value.message
    with pytest.raises(InvalidDSNError):
        parse_dsn("postgresql://h/app?pool_min_size=5", pool_max_size=4)


@pytest.mark.parametrize("dsn", [f"oracle://u:{SECRET}@h/app", "redis://h", "http://h/x"])
def test_unknown_scheme(dsn: str) -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn(dsn)
    assert "unknown DSN scheme" in caught.value.message
    assert SECRET not in caught.value.message


@pytest.mark.parametrize("dsn", ["", "   "])
def test_empty_dsn(dsn: str) -> None:
    with pytest.raises(InvalidDSNError):
        parse_dsn(dsn)


# -- passwords -------------------------------------------------------------------------


@pytest.mark.parametrize("dsn", [
    f"postgresql://app:{SECRET}@h:5432/db",
    f"postgres://app:{SECRET}@h/db?sslmode=require",
    f"mysql://app:{SECRET}@h:3306/db?connect_timeout=5",
    f"mariadb://:{SECRET}@h/db",
])
def test_password_is_redacted(dsn: str) -> None:
    parsed = parse_dsn(dsn)
    assert SECRET not in repr(parsed)
    assert SECRET not in redact_dsn(dsn)
    assert redact_dsn(dsn) == dsn.replace(SECRET, "***")




@pytest.mark.parametrize("dsn", [
    "app.db", ":memory:", "postgresql://app@h/db", "postgresql://app@h/db?sslmode=require",
    "sqlite:////abs/app.db",
    "sqlite:///relative.db?busy_timeout=5",
])
def test_redaction_leaves_passwordless_dsns_alone(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


def test_a_percent_encoded_password_is_redacted() -> None:
    dsn = "postgresql://app:p%40ss%2Fword@h/db"
    assert redact_dsn(dsn) == "postgresql://app:***@h/db"


# -- drivers ---------------------------------------------------------------------------

_DRIVERS = [
    ("postgresql://u:pw@127.0.0.1:1/db", "asyncpg", "postgres"),
    ("postgres://u:pw@127.0.0.1:1/db", "asyncpg", "postgres"),
    ("mysql://u:pw@127.0.0.1:1/db", "aiomysql", "mysql"),
    ("mariadb://u:pw@127.0.0.1:1/db", "aiomysql", "mysql"),
]


@pytest.mark.parametrize(("dsn", "driver", "extra"), _DRIVERS)
async def test_missing_driver_names_the_extra(
    dsn: str, driver: str, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # None in sys.modules is exactly what an uninstalled package looks like to import.
    monkeypatch.setitem(sys.modules, driver, None)
    dsn = dsn.format(tmp=tmp_path)
    with pytest.raises(MissingDriverError) as caught:
        load_backend(parse_dsn(dsn).backend)
    assert (caught.value.driver, caught.value.extra) == (driver, extra)
    assert caught.value.code == "missing_driver"
    assert f"power-loop[{extra}]" in caught.value.message
    with pytest.raises(MissingDriverError):
        await open_store(dsn)
    assert not (tmp_path / "x.db").exists()


# -- query-string passwords, driver options, ports -------------------------------------


@pytest.mark.parametrize("key", ["password", "sslpassword", "passwd", "PASSWORD"])
def test_a_password_in_the_query_is_redacted(key: str) -> None:
    dsn = f"postgresql://app@h/db?sslmode=require&{key}={SECRET}&application_name=pl"
    assert redact_dsn(dsn) == (
        f"postgresql://app@h/db?sslmode=require&{key}=***&application_name=pl")
    if key in {"password", "sslpassword"}:
        assert SECRET not in repr(parse_dsn(dsn))
        return
    with pytest.raises(InvalidDSNError) as caught:  # asyncpg knows neither spelling
        parse_dsn(dsn)
    assert SECRET not in caught.value.message


def test_passwords_in_user_info_and_query_are_both_redacted() -> None:
    dsn = f"mysql://app:{SECRET}@h/db?passwd={SECRET}x"
    assert redact_dsn(dsn) == "mysql://app:***@h/db?passwd=***"


def test_driver_options_keep_their_encoding() -> None:
    parsed = parse_dsn("postgresql://h/db?sslrootcert=/certs/a%26b.pem&pool_max_size=2"
                       "&application_name=x%20y%2Bz%3Dw")
    expected = {"sslrootcert": "/certs/a&b.pem", "application_name": "x y+z=w"}
    assert dict(parsed.extra) == expected
    assert parsed.options.pool_max_size == 2
    assert "pool_max_size" not in parsed.location
    # The driver parses the location again: it must read the same values back.
    assert dict(parse_dsn(parsed.location).extra) == expected


@pytest.mark.parametrize("dsn", [
    "postgresql://u@h:notaport/db",
    "mysql://u@h:notaport/db",
    "postgresql://u@h:-1/db",
    "postgresql://u@h:99999/db",
    f"mysql://u:{SECRET}@h:x1/db",
])
def test_a_bad_port_is_an_invalid_dsn(dsn: str) -> None:
    with pytest.raises(InvalidDSNError) as caught:
        parse_dsn(dsn)
    assert caught.value.code == "invalid_dsn"
    assert SECRET not in caught.value.message
