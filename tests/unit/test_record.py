"""bridge.store.record: the versioned environment record, in memory and on disk."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from bridge.errors import RecordError
from bridge.store.record import (
    RECORD_FILE,
    SCHEMA_VERSION,
    CentralModuleRecord,
    EnvRecord,
    LinkEvidence,
    ModuleRecord,
    PackageRecord,
    Provenance,
    PythonRecord,
    RequirementEvidence,
    dump_record,
    read_record,
    write_record,
)


def make_record(prefix, **overrides) -> EnvRecord:
    fields = dict(
        name="myenv", backend="venv", prefix=str(prefix),
        description="MPI + parallel HDF5: \"quotes\", 'single', ü, newline\nand: colon # hash",
        python=PythonRecord(version="3.11.2", executable="/sw/python/3.11.2/bin/python3", module="python/3.11.2",
                            soabi="cpython-311-x86_64-linux-gnu", platform="linux-x86_64"),
        module=ModuleRecord(name="myenv/py3.11", type="lmod", depends_on=["python/3.11.2", "openmpi/4.1.4"],
                            files={"lmod": "/root/modules/myenv/py3.11.lua"}),
        created=Provenance(at="2024-01-02T03:04:05Z", by="alice", host="login1", envmod_version="0.1.0",
                           microarchitecture="zen3", module_system="lmod", log="/root/logs/myenv/create.log"),
        central_modules=[CentralModuleRecord(name="openmpi/4.1.4", kind="mpi", modulefile="/m/openmpi/4.1.4.lua",
                                             version="4.1.4", prefix="/sw/openmpi",
                                             facts={"mpicc": "/sw/openmpi/bin/mpicc"}),
                         CentralModuleRecord(name="hdf5/1.10.8", kind="hdf5", facts={"parallel": True})],
        packages=[PackageRecord(name="mpi4py", version="3.1.5", install="source", requested=True,
                                built_against=["openmpi/4.1.4"], build_env={"MPICC": "/sw/openmpi/bin/mpicc"}),
                  PackageRecord(name="numpy", version="1.26.4", install="wheel")],
        requested=["mpi4py", "-r /home/alice/reqs.txt"],
        links=[LinkEvidence(file="lib/python3.11/site-packages/mpi4py/MPI.so", needs="libmpi.so.40",
                            path="/sw/openmpi/lib/libmpi.so.40", provider="openmpi/4.1.4", soname="libmpi.so.40"),
               LinkEvidence(file="lib/python3.11/site-packages/mpi4py/MPI.so", needs="libopen-pal.so.40", path=None,
                            provider="missing", via="libmpi.so.40")],
        requirements=[RequirementEvidence(package="h5py", requires="numpy", provider="python/3.11.2",
                                          location="/sw/python/3.11.2/lib/python3.11/site-packages")],
    )
    fields.update(overrides)
    return EnvRecord(**fields)


def test_dict_round_trip(tmp_path):
    record = make_record(tmp_path)
    assert EnvRecord.from_dict(record.to_dict()) == record


def test_schema_version_leads_the_dict(tmp_path):
    data = make_record(tmp_path).to_dict()
    assert next(iter(data)) == "envmod_record"
    assert data["envmod_record"] == SCHEMA_VERSION
    assert "schema" not in data


def test_file_round_trip(tmp_path):
    record = make_record(tmp_path)
    path = write_record(record)
    assert path == tmp_path / RECORD_FILE
    assert read_record(path) == record


def test_written_file_is_plain_yaml_with_a_header(tmp_path):
    path = write_record(make_record(tmp_path))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# envmod environment record (schema 1)")
    assert yaml.safe_load(text)["name"] == "myenv"
    assert "ü" in text


def test_record_path_is_inside_the_prefix(tmp_path):
    assert make_record(tmp_path).path == tmp_path / RECORD_FILE


def test_write_into_another_directory(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    record = make_record(tmp_path / "final")
    assert write_record(record, staging) == staging / RECORD_FILE
    assert read_record(staging / RECORD_FILE).prefix == str(tmp_path / "final")


def test_write_leaves_no_temporary_files(tmp_path):
    record = make_record(tmp_path)
    write_record(record)
    write_record(record)
    assert sorted(os.listdir(tmp_path)) == [RECORD_FILE]


def test_failed_write_leaves_the_old_record_and_no_temporary_file(tmp_path):
    record = make_record(tmp_path)
    write_record(record)
    before = (tmp_path / RECORD_FILE).read_bytes()
    broken = make_record(tmp_path, description=object())   # not plain data: the writer refuses it
    with pytest.raises(yaml.representer.RepresenterError):
        write_record(broken)
    assert (tmp_path / RECORD_FILE).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [RECORD_FILE]


def test_rewrite_replaces_the_file(tmp_path):
    record = make_record(tmp_path)
    write_record(record)
    record.module.type = "tcl"
    write_record(record)
    assert read_record(tmp_path / RECORD_FILE).module.type == "tcl"


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["envmod_record"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError) as info:
        EnvRecord.from_dict(data, "envmod.yaml")
    assert f"schema {SCHEMA_VERSION + 1}" in info.value.message
    assert info.value.hint == "upgrade envmod"


def test_newer_schema_on_disk_is_refused(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["envmod_record"] = 99
    (tmp_path / RECORD_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(RecordError, match="schema 99"):
        read_record(tmp_path / RECORD_FILE)


def test_non_integer_schema_is_refused(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["envmod_record"] = "1"
    with pytest.raises(RecordError, match="schema"):
        EnvRecord.from_dict(data)


def test_unknown_fields_are_ignored_for_forward_compatibility(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["python"]["future_field"] = 1
    data["packages"][0]["hash"] = "sha256:..."
    assert EnvRecord.from_dict(data) == make_record(tmp_path)


def test_optional_lists_may_be_missing(tmp_path):
    data = make_record(tmp_path).to_dict()
    for key in ("central_modules", "packages", "requested", "description", "links", "requirements"):
        del data[key]
    record = EnvRecord.from_dict(data)
    assert (record.central_modules, record.packages, record.requested, record.description,
            record.links, record.requirements) == ([], [], [], "", [], [])


def test_link_evidence_survives_the_file_round_trip(tmp_path):
    record = make_record(tmp_path)
    read = read_record(write_record(record))
    assert read.links == record.links and read.links[1].path is None and read.links[1].via == "libmpi.so.40"
    assert read.requirements == record.requirements


def test_link_evidence_of_the_wrong_type_is_a_record_error(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["links"] = ["libmpi.so.40"]
    with pytest.raises(RecordError, match="incomplete or malformed"):
        EnvRecord.from_dict(data)


def test_mapping_without_the_marker_is_not_a_record():
    with pytest.raises(RecordError, match="is not an envmod environment record"):
        EnvRecord.from_dict({"name": "x"}, "f.yaml")


def test_missing_required_field_is_a_record_error(tmp_path):
    data = make_record(tmp_path).to_dict()
    del data["backend"]
    with pytest.raises(RecordError, match="incomplete or malformed"):
        EnvRecord.from_dict(data)


def test_section_of_the_wrong_type_is_a_record_error(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["python"] = "3.11"
    with pytest.raises(RecordError, match="incomplete or malformed"):
        EnvRecord.from_dict(data)


def test_section_missing_a_required_field_is_a_record_error(tmp_path):
    data = make_record(tmp_path).to_dict()
    del data["module"]["name"]
    with pytest.raises(RecordError, match="incomplete or malformed"):
        EnvRecord.from_dict(data)


def test_package_entry_of_the_wrong_type_is_a_record_error(tmp_path):
    data = make_record(tmp_path).to_dict()
    data["packages"] = ["numpy"]
    with pytest.raises(RecordError):
        EnvRecord.from_dict(data)


def test_missing_file_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="no environment record"):
        read_record(tmp_path / RECORD_FILE)


def test_invalid_yaml_is_a_one_line_record_error(tmp_path):
    (tmp_path / RECORD_FILE).write_text("name: [unclosed\n")
    with pytest.raises(RecordError) as info:
        read_record(tmp_path / RECORD_FILE)
    assert "not valid YAML" in info.value.message and "\n" not in info.value.message


def test_empty_file_is_not_a_record(tmp_path):
    (tmp_path / RECORD_FILE).write_text("")
    with pytest.raises(RecordError, match="not an envmod environment record"):
        read_record(tmp_path / RECORD_FILE)


def test_yaml_list_is_not_a_record(tmp_path):
    (tmp_path / RECORD_FILE).write_text("- a\n- b\n")
    with pytest.raises(RecordError, match="not an envmod environment record"):
        read_record(tmp_path / RECORD_FILE)


def test_unreadable_path_is_a_record_error(tmp_path):
    (tmp_path / RECORD_FILE).mkdir()
    with pytest.raises(RecordError, match="cannot read"):
        read_record(tmp_path / RECORD_FILE)


def test_central_module_lookup_by_name(tmp_path):
    record = make_record(tmp_path)
    assert record.central_module("hdf5/1.10.8").facts == {"parallel": True}
    assert record.central_module("gcc/12") is None


def test_dump_is_deterministic(tmp_path):
    record = make_record(tmp_path)
    assert dump_record(record) == dump_record(make_record(tmp_path))


# ---- the file is written by PyYAML (libyaml's emitter when there, else PyYAML's own) ------

HOSTILE_STRINGS = ["", "plain", "yes", "no", "on", "null", "~", "1", "0x1f", "1e3", "- item", "a: b", "# hash",
                   "'single'", '"double"', "back\\slash", "tab\there", "new\nline", "ends in newline\n", "\r\n",
                   "\x00\x07\x1b\x7f", "\x85\u2028\u2029", "ü ß 漢字 😀", "\ufeffbom", "  leading and trailing  ",
                   "{flow}", "[list]", "&anchor *alias !tag %dir @ `", "x" * 150 + " " + "y" * 150,
                   "]] $(touch /tmp/x) `id` [exec id] ${HOME}\n second line\ttab"]


@pytest.fixture(params=["libyaml", "python emitter"])
def yaml_emitter(request, monkeypatch):
    """Both ways a record is written: the C dumper, and PyYAML's own (a fake absence of libyaml,
    which this machine has: the emitter used where PyYAML was built without it)."""
    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeDumper"):
            pytest.skip("PyYAML without libyaml")
    else:
        monkeypatch.delattr(yaml, "CSafeDumper", raising=False)
    return request.param


def hostile_record(tmp_path, text: str) -> EnvRecord:
    (tmp_path / "env").mkdir(exist_ok=True)
    record = make_record(tmp_path / "env", description=text)
    record.packages[0].build_env = {"MPICC": text, text: "key"}
    record.central_modules[0].facts = {"note": text, "list": [text, 1, None, True, 1.5e300]}
    record.links[0].file = "lib/" + text
    record.requested = [text]
    return record


def test_hostile_text_round_trips_through_the_record_file_exactly(tmp_path, yaml_emitter):
    for text in HOSTILE_STRINGS:
        record = hostile_record(tmp_path, text)
        path = write_record(record)
        assert read_record(path) == record, repr(text)
        assert yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader) == record.to_dict()


def test_record_file_keeps_the_key_order_in_block_style(tmp_path, yaml_emitter):
    record = make_record(tmp_path)
    text = dump_record(record)
    assert list(yaml.safe_load(text)) == list(record.to_dict())
    assert "\nname: myenv\n" in text and "\ncentral_modules:\n- name: openmpi/4.1.4\n" in text    # block style
    assert "ü" in text


def test_a_file_name_that_is_not_utf8_is_written_escaped(tmp_path, yaml_emitter):
    """A file name os.fsdecode made from bytes that are not UTF-8 holds a lone surrogate, which
    libyaml cannot take: it is written by PyYAML's own emitter, escaped."""
    record = make_record(tmp_path)
    record.links[0].file = os.fsdecode(b"lib/caf\xff.so")
    text = dump_record(record)
    assert text.isascii() or text.encode("utf-8")           # writable as UTF-8
    assert yaml.load(text, Loader=yaml.SafeLoader) == record.to_dict()
    assert read_record(write_record(record)) == record        # and read back, libyaml or not


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    @settings(max_examples=150, deadline=None)
    @given(st.text(), st.dictionaries(st.text(), st.text() | st.integers() | st.none() | st.booleans(), max_size=4))
    def test_generated_text_round_trips_through_the_record_file(tmp_path_factory, text, facts):
        record = make_record(tmp_path_factory.mktemp("env"), description=text)
        record.central_modules[0].facts = facts
        assert read_record(write_record(record)) == record


def test_a_record_rewritten_in_place_keeps_its_modes(tmp_path):
    """A module or kernel added rewrites the record: a group-shared env's stays its group's to
    read (the temp file it is written through is 0600)."""
    path = write_record(make_record(tmp_path), tmp_path)
    os.chmod(path, 0o640)
    again = write_record(make_record(tmp_path, description="changed"), tmp_path)
    assert again == path and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert read_record(path).description == "changed"
