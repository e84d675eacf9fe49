"""Each params section sits beside its method and the package still imports without a cycle: the
config imports the methods' light ``settings`` modules, whose packages import nothing heavy until a
name is used (empathy_utils.lazy)."""

import subprocess
import sys
import types

import pytest

from empathy_utils.lazy import lazy_exports

SETTINGS_MODULES = ["empathy_utils.settings_base", "empathy_utils.multi_run", "empathy_utils.pride.settings",
                    "empathy_utils.judge_validation.settings", "empathy_utils.dbt.settings", "empathy_utils.config"]


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", SETTINGS_MODULES)
def test_each_settings_module_imports_alone(module):
    done = _fresh(f"import {module}")
    assert done.returncode == 0, done.stderr


def test_the_config_does_not_import_the_method_stages():
    done = _fresh("import sys, empathy_utils.config\n"
                  "heavy = [m for m in ('empathy_utils.pride.stage', 'empathy_utils.judge_validation.stage', 'torch')"
                  " if m in sys.modules]\n"
                  "print(heavy)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing the config imported {done.stdout.strip()}"


def test_the_sections_are_the_ones_beside_their_methods():
    from empathy_utils.config import StudyConfig
    from empathy_utils.dbt.settings import DBTSettings
    from empathy_utils.judge_validation.settings import JudgeValidationSettings
    from empathy_utils.multi_run import VariantsSettings
    from empathy_utils.pride.settings import PrideSettings

    cfg = StudyConfig()
    assert type(cfg.pride) is PrideSettings
    assert type(cfg.judge_validation) is JudgeValidationSettings
    assert type(cfg.variants) is VariantsSettings
    assert type(cfg.dbt) is DBTSettings


@pytest.mark.parametrize("module", ["empathy_utils.dbt.stage", "empathy_utils.dbt.presenting"])
def test_a_method_stage_and_its_presentation_import_alone(module):
    done = _fresh(f"import {module}")
    assert done.returncode == 0, done.stderr


def test_the_dbt_stage_does_not_import_its_presentation_on_import():
    """The stage computes; it calls the presentation only to write its dataset card and figure."""
    done = _fresh("import sys, empathy_utils.dbt.stage\nprint('empathy_utils.dbt.presenting' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_every_name_a_method_package_exports_resolves():
    import empathy_utils.dbt as dbt
    import empathy_utils.judge_validation as jv
    import empathy_utils.pride as pride

    for package in (pride, jv, dbt):
        missing = [name for name in package.__all__ if getattr(package, name, None) is None]
        assert not missing, f"{package.__name__} exports {missing} but they do not resolve"
    assert pride.pride_generate.__name__ == "generate_replies", "an alias names the stage's function"
    assert jv.pairs.__name__ == "empathy_utils.judge_validation.pairs", "a submodule is reached by name"
    assert dbt.dbt_glue_facts.__module__ == "empathy_utils.dbt.presenting", "the chapter's facts are presentation"
    assert dbt.dbt_evaluate.__module__ == "empathy_utils.dbt.stage"


def test_lazy_exports_names_what_is_missing():
    package = types.ModuleType("empathy_utils")
    package.__getattr__ = lazy_exports("empathy_utils", {"load_config": "config", "cfg_error": "errors:ConfigError"})
    from empathy_utils.config import load_config
    from empathy_utils.errors import ConfigError

    assert package.__getattr__("load_config") is load_config
    assert package.__getattr__("cfg_error") is ConfigError
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        package.__getattr__("no_such_name")
