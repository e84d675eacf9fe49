"""What publishes the book: the GitHub Pages workflow (it cannot run here, so its shape is checked),
the licence the package declares, the citation file and the site settings in _config.yml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"


def _workflow() -> dict:
    flow = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    flow["on"] = flow.pop(True, flow.get("on"))
    return flow


def _uses(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def test_workflow_runs_on_main_and_by_hand_with_pages_permissions():
    flow = _workflow()
    assert "main" in flow["on"]["push"]["branches"]
    assert "workflow_dispatch" in flow["on"]
    perms = flow["permissions"]
    assert perms["pages"] == "write" and perms["id-token"] == "write"
    assert perms.get("contents") == "read", "the build needs to read the repository and nothing more"


def test_workflow_builds_the_study_book_offline_with_caches():
    build = _workflow()["jobs"]["build"]
    steps = build["steps"]
    names = [_uses(s) for s in steps]
    assert names[0] == "actions/checkout"
    assert all("@" in s["uses"] for s in steps if "uses" in s), "every action is pinned to a version"
    runs = [s["run"] for s in steps if "run" in s]
    assert any(re.search(r"\bmake study PROFILE=study\b", r) for r in runs)
    env = build["env"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1"
    cached = [s["with"]["path"] for s in steps if _uses(s) == "actions/cache"]
    assert ".venv" in cached, "the virtual environment is cached"
    cache_dir = env["EMPATHY_CACHE_DIR"].replace("${{ github.workspace }}/", "")
    assert cache_dir in cached, "the converted model (EMPATHY_CACHE_DIR) is cached"
    venv_key = next(s["with"]["key"] for s in steps if _uses(s) == "actions/cache" and s["with"]["path"] == ".venv")
    assert "pyproject.toml" in venv_key and "constraints.txt" in venv_key, "a changed pin invalidates the venv"
    python = next(s["with"]["python-version"] for s in steps if _uses(s) == "actions/setup-python")
    assert f"py{python}" in venv_key, "a venv is only reused by the Python that made it"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.findall(r"3\.(\d+)", requires)
    assert int(low) <= int(python.split(".")[1]) < int(high)
    # The build step comes after the caches are restored, and the upload after the build.
    build_at = next(i for i, s in enumerate(steps) if "make study" in s.get("run", ""))
    assert max(i for i, n in enumerate(names) if n == "actions/cache") < build_at
    upload = [i for i, n in enumerate(names) if n == "actions/upload-pages-artifact"]
    assert upload and upload[0] > build_at
    assert steps[upload[0]]["with"]["path"] == "_build/html"


def test_workflow_deploys_the_uploaded_book_to_pages():
    jobs = _workflow()["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build" or deploy["needs"] == ["build"]
    assert deploy["environment"]["name"] == "github-pages"
    (step,) = [s for s in deploy["steps"] if _uses(s) == "actions/deploy-pages"]
    assert deploy["environment"]["url"] == "${{ steps.%s.outputs.page_url }}" % step["id"]


def test_workflow_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^study:", makefile, re.M) and "--profile $(PROFILE)" in makefile
    assert "$(BIN)/empathy-study book" in makefile.split("study:", 1)[1].split("\n\n")[0]
    if not (REPO / "notebooks" / "params" / "study.yaml").exists():
        pytest.skip("the `study` profile (issue 14, part 1) is not in this checkout yet")


def test_license_is_the_apache_text_the_package_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0", "an SPDX expression (setuptools >= 77), not the deprecated table"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    for part in ("Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION",
                 "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS",
                 "APPENDIX: How to apply the Apache License to your work."):
        assert part in text, f"LICENSE lacks {part!r}: not the full Apache-2.0 text"


# The part of the Citation File Format 1.2.0 schema (citation-file-format.github.io) this file uses:
# required keys, person or entity authors, and the types of the optional keys.
_PERSON = {"type": "object", "additionalProperties": False, "minProperties": 1,
           "properties": {k: {"type": "string", "minLength": 1} for k in
                          ("family-names", "given-names", "name-particle", "name-suffix", "affiliation",
                           "email", "orcid", "website", "alias")}}
_ENTITY = {"type": "object", "required": ["name"],
           "properties": {k: {"type": "string", "minLength": 1} for k in
                          ("name", "address", "city", "country", "email", "website", "orcid", "alias")}}
_AUTHORS = {"type": "array", "minItems": 1, "items": {"anyOf": [_ENTITY, _PERSON]}}
_REFERENCE = {"type": "object", "required": ["type", "title", "authors"],
              "properties": {"type": {"enum": ["article", "book", "conference-paper", "data", "generic",
                                               "report", "software", "thesis"]},
                             "title": {"type": "string", "minLength": 1}, "authors": _AUTHORS,
                             "year": {"type": "integer"},
                             "conference": {"type": "object", "required": ["name"]}}}
CFF_SCHEMA = {
    "type": "object",
    "required": ["cff-version", "message", "title", "authors"],
    "additionalProperties": False,
    "properties": {
        "cff-version": {"const": "1.2.0"},
        "message": {"type": "string", "minLength": 1},
        "title": {"type": "string", "minLength": 1},
        "abstract": {"type": "string", "minLength": 1},
        "type": {"enum": ["software", "dataset"]},
        "authors": _AUTHORS,
        "version": {"type": ["string", "number"]},
        "license": {"type": "string", "pattern": r"^[A-Za-z0-9.+-]+$"},
        "keywords": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "date-released": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "doi": {"type": "string", "pattern": r"^10\.\d{4,9}/[-._;()/:A-Za-z0-9]+$"},
        "repository-code": {"type": "string", "pattern": r"^https?://"},
        "url": {"type": "string", "pattern": r"^https?://"},
        "references": {"type": "array", "items": _REFERENCE},
        "preferred-citation": _REFERENCE,
    },
}


def test_citation_file_is_valid_and_matches_the_package():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    jsonschema.validate(cff, CFF_SCHEMA)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"]
    cited = {r["title"] for r in cff["references"]}
    assert "Distilling Empathy from Large Language Models" in cited, "the re-implemented paper is cited"


def test_the_schema_check_rejects_what_cff_rejects():
    good = yaml.safe_load((REPO / "CITATION.cff").read_text())
    for broken in ({**good, "authors": []}, {**good, "cff-version": "1.1.0"}, {**good, "licence": "MIT"},
                   {**good, "authors": [{"given-names": "Ada", "nickname": "A"}]},
                   {k: v for k, v in good.items() if k != "message"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, CFF_SCHEMA)


def test_site_settings_are_documented_placeholders():
    text = (REPO / "_config.yml").read_text()
    config = yaml.safe_load(text)
    baseurl = config["html"]["baseurl"]
    assert baseurl.startswith("https://") and baseurl.endswith("/")
    assert config["repository"]["url"].startswith("https://github.com/")
    assert "Placeholders" in text and "OWNER" in baseurl, "placeholders are marked as such until published"
    assert "book.yml" in text
