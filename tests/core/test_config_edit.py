"""config_edit: the settings dialog's writer. What the user wrote by hand survives a save byte
for byte except the values that changed; entries keep their comments; a broken file is never
overwritten; the write is atomic; any valid settings round-trip through load_settings."""
from __future__ import annotations

import copy
import os
import string
import tomllib
from pathlib import Path

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import THEMES, ProxyRoute, ServerEntry, Settings, load_settings
from app.config_edit import Edit, edited_text, edits_by_position, save_settings
from app.config_write import ConfigWriteError

HAND_WRITTEN = """\
# llmmon settings, written by hand
[general]
retention_days = 30        # a month is plenty
discover_local = true
future_option = "kept"     # a key this llmmon does not know

# The big box in the lab
[[servers]]
url = "http://gpu-box:8000"   # vLLM
name = "lab"
api_key_ref = "lab-key"

# The laptop, when it is on
[[servers]]
url = "http://laptop:11434"
kind = "ollama"

[proxy]
enabled = false            # on when I benchmark
[[proxy.routes]]
upstream = "http://gpu-box:8000"
listen = 8001
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_only_the_changed_values_change_and_everything_else_stays_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before, problems = load_settings(path)
    assert [p for p in problems if "future_option" not in p] == []
    after = copy.deepcopy(before)
    after.retention_days = 7
    after.proxy.enabled = True
    save_settings(path, before, after, servers=edits_by_position(before.servers, after.servers))
    expected = HAND_WRITTEN.replace("retention_days = 30 ", "retention_days = 7 ") \
        .replace("enabled = false ", "enabled = true ")
    assert path.read_text(encoding="utf-8") == expected
    assert load_settings(path)[0] == after


def test_saving_unchanged_settings_does_not_touch_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before, _ = load_settings(path)
    mtime = path.stat().st_mtime_ns
    save_settings(path, before, copy.deepcopy(before), servers=edits_by_position(before.servers, before.servers))
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN
    assert path.stat().st_mtime_ns == mtime


def test_a_new_server_writes_its_table_and_no_empty_proxy_table(tmp_path: Path) -> None:
    mine = "# mine\n[general]\nretention_days = 30\n"
    path = write(tmp_path, mine)
    before, _ = load_settings(path)
    after = copy.deepcopy(before)
    after.servers.append(ServerEntry("http://10.0.0.7:8080", kind="llamacpp"))
    # as the settings dialog saves: the proxy page's route edits, none here
    save_settings(path, before, after, servers=edits_by_position(before.servers, after.servers), routes=[])
    assert path.read_text(encoding="utf-8") == (mine + '\n[[servers]]\nurl = "http://10.0.0.7:8080"\n'
                                                'kind = "llamacpp"\n')
    # an empty [proxy] the user wrote is theirs: it stays
    path.write_text("[proxy]\n", encoding="utf-8")
    save_settings(path, Settings(), Settings(), servers=[], routes=[])
    assert path.read_text(encoding="utf-8") == "[proxy]\n"


def test_an_edited_server_keeps_its_comments_a_removed_one_goes_a_new_one_comes_last(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before, _ = load_settings(path)
    lab, laptop = before.servers
    renamed = ServerEntry(url="http://laptop:11434", kind="ollama", name="my laptop")
    new = ServerEntry(url="http://10.0.0.7:8080", kind="llamacpp", api_key_ref="api_key:http://10.0.0.7:8080")
    after = copy.deepcopy(before)
    after.servers = [renamed, new]
    text = save_settings(path, before, after, servers=[Edit(laptop, renamed), Edit(None, new)])
    assert 'url = "http://gpu-box:8000"' not in text.split("[proxy]")[0]  # the lab box is gone
    assert "# The laptop, when it is on\n" in text                       # its neighbour's comment stays
    assert '[[servers]]\nurl = "http://laptop:11434"\nkind = "ollama"\nname = "my laptop"\n' in text
    assert text.index("my laptop") < text.index("10.0.0.7") < text.index("[proxy]")
    assert "# The big box in the lab\n" in text  # a comment outside the removed table is never deleted
    assert load_settings(path)[0].servers == [renamed, new]


def test_routes_edited_by_entry_with_their_on_off_switch(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    before, _ = load_settings(path)
    (route,) = before.proxy.routes
    off = ProxyRoute(route.upstream, 8001, kind="vllm", enabled=False)
    wide = ProxyRoute("http://laptop:11434", 11435, listen_host="0.0.0.0", kind="ollama", name="laptop")
    after = copy.deepcopy(before)
    after.proxy.routes = [off, wide]
    text = save_settings(path, before, after, routes=[Edit(route, off), Edit(None, wide)])
    assert 'listen = "0.0.0.0:11435"' in text and "enabled = false" in text
    assert load_settings(path)[0].proxy.routes == [off, wide]


def test_a_file_that_is_not_toml_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    broken = "[general\nretention_days = 30\n"
    path = write(tmp_path, broken)
    after = Settings(retention_days=7)
    try:
        save_settings(path, Settings(), after)
    except ConfigWriteError as exc:
        assert "not valid TOML" in str(exc) and "fix it by hand" in str(exc)
    else:
        raise AssertionError("a broken file was edited")
    assert path.read_text(encoding="utf-8") == broken


def test_a_value_where_a_table_should_be_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "general = 5\n")
    try:
        save_settings(path, Settings(), Settings(retention_days=7))
    except ConfigWriteError as exc:
        assert "[general] is not a table" in str(exc)
    else:
        raise AssertionError("general = 5 was overwritten")
    assert path.read_text(encoding="utf-8") == "general = 5\n"


def test_the_write_is_atomic_keeps_the_permissions_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = write(tmp_path, HAND_WRITTEN)
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    before, _ = load_settings(path)
    save_settings(path, before, Settings(**{**before.__dict__, "theme": "dark"}))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_missing_file_and_folder_are_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    after = Settings(retention_days=None, retention_gb=2.5, servers=[ServerEntry("http://a:1")])
    save_settings(path, Settings(), after, servers=[Edit(None, after.servers[0])])
    assert load_settings(path) == (after, [])
    assert path.read_text(encoding="utf-8").startswith('[general]\nretention_days = "never"\nretention_gb = 2.5\n')


# ---------------------------------------------------------------------------- properties
hosts = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
                  st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))))
urls = st.builds(lambda scheme, host, port: f"{scheme}://{host}:{port}", st.sampled_from(["http", "https"]),
                 hosts, st.integers(1, 65535))
kinds = st.sampled_from(["auto", "ollama", "vllm", "openai", "llamacpp"])
texts = st.text(string.printable + "éü→🙂\"\\", max_size=20)
days = st.one_of(st.none(), st.floats(0.001, 36_500), st.integers(1, 36_500).map(float))
gigabytes = st.one_of(st.none(), st.floats(0.001, 1e6), st.integers(1, 1_000_000).map(float))
intervals = st.floats(0.25, 3600, allow_nan=False)
servers = st.builds(ServerEntry, url=urls, kind=kinds, name=texts,
                    api_key_ref=st.one_of(st.just(""), urls.map(lambda u: f"api_key:{u}")))
routes = st.builds(ProxyRoute, upstream=urls, listen_port=st.integers(1, 65535),
                   listen_host=st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "box"]), kind=kinds, name=texts,
                   enabled=st.booleans())


@st.composite
def any_settings(draw: st.DrawFn) -> Settings:
    s = Settings(retention_days=draw(days), retention_gb=draw(gigabytes), system_interval_s=draw(intervals),
                 server_interval_s=draw(intervals), servers=draw(st.lists(servers, max_size=3)),
                 discover_local=draw(st.booleans()), theme=draw(st.sampled_from(THEMES)))
    s.proxy.enabled, s.proxy.include_usage, s.proxy.store_content = draw(st.lists(st.booleans(), min_size=3,
                                                                                 max_size=3))
    s.proxy.content_max_chars = draw(st.integers(1, 10_000_000))
    s.proxy.routes = draw(st.lists(routes, max_size=3))
    return s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=any_settings(), second=any_settings())
def test_any_valid_settings_round_trip_and_an_edit_keeps_the_users_lines(tmp_path: Path, first: Settings,
                                                                         second: Settings) -> None:
    """Write arbitrary settings into a hand-written file, then edit them into other arbitrary
    settings: each time load_settings reads back exactly what was saved, with no problem, and
    the user's own comment and unknown key are still there."""
    path = write(tmp_path, "# my notes\n[general]\nfuture_option = 1  # mine\n")
    start, _ = load_settings(path)
    save_settings(path, start, first, servers=edits_by_position(start.servers, first.servers),
                  routes=edits_by_position(start.proxy.routes, first.proxy.routes))
    loaded, problems = load_settings(path)
    assert loaded == first
    assert [p for p in problems if "future_option" not in p] == []
    save_settings(path, loaded, second, servers=edits_by_position(loaded.servers, second.servers),
                  routes=edits_by_position(loaded.proxy.routes, second.proxy.routes))
    loaded, problems = load_settings(path)
    assert loaded == second
    assert [p for p in problems if "future_option" not in p] == []
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my notes\n[general]\nfuture_option = 1  # mine\n")


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["url", "x", "listen"]),
                                                                          inner, max_size=3)),
    max_leaves=8)


def _inline(values: dict) -> object:
    """``values`` as a table written inline: ``{enabled = true}``."""
    table = tomlkit.inline_table()
    table.update(values)
    return table


inline_tables = st.dictionaries(st.sampled_from(["enabled", "retention_days", "x"]), st.booleans(),
                                max_size=2).map(_inline)
sections = st.dictionaries(
    st.sampled_from(["general", "servers", "proxy", "other"]),
    st.one_of(st.dictionaries(st.sampled_from(["retention_days", "theme", "routes", "enabled", "x"]), toml_values,
                              max_size=4),
              st.lists(st.dictionaries(st.sampled_from(["url", "name", "kind"]), toml_values, max_size=3),
                       max_size=2),
              toml_values, inline_tables),
    max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=sections, after=any_settings())
def test_any_existing_document_is_edited_or_refused_never_broken(document: dict, after: Settings) -> None:
    """Whatever TOML the user wrote (lists where tables should be, values of any type, tables
    inline or not), saving either refuses with ConfigWriteError or writes a TOML document in
    which what was saved reads back as saved."""
    text = tomlkit.dumps(document)
    try:
        out = edited_text(text, Settings(), after, servers=edits_by_position([], after.servers),
                          routes=edits_by_position([], after.proxy.routes))
    except ConfigWriteError:
        return
    raw = tomllib.loads(out)
    if after.theme != "system":
        assert raw["general"]["theme"] == after.theme
    saved = [entry for entry in raw.get("servers", []) if isinstance(entry, dict)][-len(after.servers):] \
        if after.servers else []
    assert [s["url"] for s in saved] == [s.url for s in after.servers]
