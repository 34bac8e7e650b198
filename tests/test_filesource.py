"""File mode: configuration files become object events, robust to how files really change
(ConfigMap symlink swaps, partial writes, vanishing files, editors, cp)."""
from __future__ import annotations

import os
import textwrap

from dataplane.filesource import FileSource


def svc(name, port=80, ip="10.96.0.1"):
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: default}}
        spec: {{clusterIP: {ip}, ports: [{{port: {port}}}]}}
        """)


class Events(list):
    def __call__(self, events):
        self.extend(events)

    def state(self, attr="services"):
        out = {}
        for e in self:
            if e.attr == attr:
                if e.new is None:
                    out.pop(e.key, None)
                else:
                    out[e.key] = e.new
        return out


def settle(src, polls=2):
    """A changed file is read once it is stable for one poll: poll twice."""
    out = []
    for _ in range(polls):
        out += src.poll()
    return out


def test_first_poll_reads_everything_then_only_changes(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    (tmp_path / "b.yaml").write_text(svc("b", ip="10.96.0.2"))
    got = Events()
    src = FileSource(tmp_path, got)
    first = src.poll()
    assert {e.key for e in first} == {("default", "a"), ("default", "b")}
    assert settle(src) == []                       # nothing changed: no events
    (tmp_path / "b.yaml").write_text(svc("b", port=81, ip="10.96.0.2"))
    os.utime(tmp_path / "b.yaml", ns=(1, 1))      # a different mtime even on a coarse clock
    changed = settle(src)
    assert [(e.key, e.old.ports[0].port, e.new.ports[0].port) for e in changed] == [(("default", "b"), 80, 81)]


def test_rewriting_a_file_unchanged_is_no_event(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    src = FileSource(tmp_path, Events())
    src.poll()
    (tmp_path / "a.yaml").write_text(svc("a"))
    os.utime(tmp_path / "a.yaml", ns=(5, 5))
    assert settle(src) == []


def test_a_file_being_written_is_read_once_complete(tmp_path):
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    path = tmp_path / "new.yaml"
    text = svc("a") + "---\n" + svc("b", ip="10.96.0.2")
    path.write_text(text[:40])                    # cp in progress: half a document
    assert src.poll() == []                       # seen once: not read yet
    path.write_text(text)
    os.utime(path, ns=(7, 7))
    assert src.poll() == []                       # changed again: still waiting
    events = src.poll()                           # stable now
    assert {e.key for e in events} == {("default", "a"), ("default", "b")}
    assert src.reads == 1 and got.state().keys() == {("default", "a"), ("default", "b")}


def test_broken_yaml_keeps_the_files_last_good_objects(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(svc("a") + "---\n" + svc("b", ip="10.96.0.2"))
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    path.write_text(svc("a") + "---\nkind: [unclosed\n")
    os.utime(path, ns=(9, 9))
    settle(src)
    assert set(got.state()) == {("default", "a"), ("default", "b")}
    assert any("YAML" in p for p in src.problems[str(path)])


def test_an_invalid_object_keeps_its_last_good_version_and_others_apply(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(svc("a") + "---\n" + svc("b", ip="10.96.0.2"))
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    path.write_text(svc("a", port=70000) + "---\n" + svc("b", port=82, ip="10.96.0.2"))
    os.utime(path, ns=(11, 11))
    settle(src)
    state = got.state()
    assert state[("default", "a")].ports[0].port == 80
    assert state[("default", "b")].ports[0].port == 82
    assert any("port" in p for p in src.problems[str(path)])


def test_a_removed_file_takes_its_objects_with_it(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    (tmp_path / "b.yaml").write_text(svc("b", ip="10.96.0.2"))
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    (tmp_path / "b.yaml").unlink()
    events = src.poll()
    assert [(e.key, e.new) for e in events] == [(("default", "b"), None)]


def test_a_dangling_symlink_is_reported_and_changes_nothing(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("a"))
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    (tmp_path / "z.yaml").symlink_to(tmp_path / "nowhere.yaml")
    assert settle(src) == []
    assert set(got.state()) == {("default", "a")}
    assert "cannot read" in src.problems[str(tmp_path / "z.yaml")][0]


def test_configmap_style_symlink_swap(tmp_path):
    """kubelet's atomic update: files are links to ..data/<file>, ..data a link to a timestamped
    directory, swapped by a rename."""
    def version(n, port):
        d = tmp_path / f"..2026_{n}"
        d.mkdir()
        (d / "services.yaml").write_text(svc("a", port=port))
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(d.name)
        tmp_link.replace(tmp_path / "..data")
    version(1, 80)
    (tmp_path / "services.yaml").symlink_to("..data/services.yaml")
    got = Events()
    src = FileSource(tmp_path, got)
    src.poll()
    assert got.state()[("default", "a")].ports[0].port == 80
    version(2, 8080)
    settle(src)
    assert got.state()[("default", "a")].ports[0].port == 8080
    assert src.problems == {}


def test_a_vanished_directory_keeps_everything(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text(svc("a"))
    got = Events()
    src = FileSource(conf, got)
    src.poll()
    (conf / "a.yaml").unlink()
    conf.rmdir()
    assert settle(src) == []
    assert set(got.state()) == {("default", "a")}
    conf.mkdir()                                  # back, without the file: now it is gone
    assert [e.new for e in src.poll()] == [None]


def test_duplicate_objects_across_files_first_file_wins(tmp_path):
    (tmp_path / "a.yaml").write_text(svc("x", port=1))
    (tmp_path / "b.yaml").write_text(svc("x", port=2))
    got = Events()
    FileSource(tmp_path, got).poll()
    assert got.state()[("default", "x")].ports[0].port == 1
