"""The source registry: each spec's key, settings section and class name are one name; the settings
load without any source's libraries; build_app wires what each source declares."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.settings import CoreSettings, Settings, SourceSettings
from collector.source import SourceBase
from collector.sources import SOURCES, Registry, SourceSpec

pytestmark = pytest.mark.quick


def test_every_registered_source_loads_under_its_own_name_with_its_own_settings_section() -> None:
    for name, spec in SOURCES.items():
        cls = spec.load()
        assert issubclass(cls, SourceBase) and cls.name == name == spec.name
        model = spec.settings_model()
        assert issubclass(model, SourceSettings)
        assert Settings.model_fields[name].annotation is model
    # The root is the core settings plus one section per source, nothing else.
    assert set(Settings.model_fields) == set(CoreSettings.model_fields) | set(SOURCES)


def test_settings_load_without_any_source_library() -> None:
    code = (
        "import sys; from collector.settings import Settings; Settings(_env_file=None);"
        "print(sorted(m for m in ('psutil', 'websockets', 'gidgethub', 'watchfiles') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_spec_must_name_a_source_class_and_a_settings_model() -> None:
    with pytest.raises(ValueError, match="lowercase identifier"):
        SourceSpec("Queue", "LogsSettings", "collector.sources.logs.source:LogsSource")
    with pytest.raises(TypeError, match="does not subclass"):
        SourceSpec("logs", "LogsSettings", "collector.settings:CoreSettings").load()
    with pytest.raises(TypeError, match="is named 'logs'"):
        SourceSpec("files", "LogsSettings", "collector.sources.logs.source:LogsSource").load()
    with pytest.raises(TypeError, match="not a SourceSettings"):
        SourceSpec("logs", "HttpSettings", "collector.sources.logs.source:LogsSource").settings_model()
    with pytest.raises(ValueError, match="registered twice"):
        Registry(SOURCES["logs"], SOURCES["logs"])


def test_only_keeps_the_registry_order() -> None:
    assert list(SOURCES.only("logs", "process")) == ["process", "logs"]


@pytest.mark.parametrize(
    "enabled",
    [("github",), ("deployments",), ("github", "deployments")],
)
def test_get_dora_comes_with_the_shared_engine_once_whichever_source_declares_it(tmp_path, enabled) -> None:
    from collector.app import RUNTIME, build_app
    from tests.helpers import make_settings

    kw = {
        "github": {"webhook_secret": "gh-secret"},
        "deployments": {"token": "ci-token"},
    }
    app = build_app(make_settings(tmp_path, **{name: kw[name] for name in enabled}))
    paths = [r.canonical for r in app.router.resources()]
    assert paths.count("/dora") == 1
    engines = {id(source.engine) for source, _ctx in app[RUNTIME].sources}
    assert len(engines) == 1  # one DORA engine per app, shared by the sources that declare it
