"""The app never shows a traceback (issue 19): one sentence in the page, the details in the log.

Pages are driven headlessly with ``streamlit.testing.v1.AppTest``, as in tests/test_app.py: a failing page is a
function handed to ``nav.run_page`` (no module attribute is swapped), an upload is set on the Data page's
uploader.
"""

from __future__ import annotations

import logging
import pathlib
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pages.support, as the page files import it
    sys.path.insert(0, str(ROOT))
TIMEOUT = 240


def _broken_page(root):
    import sys

    sys.path.insert(0, root)
    import streamlit as st

    from pages.support import nav

    def render():
        st.title("A page with a bug")
        {}["secret_key_in_the_traceback"]  # noqa: B018 - a bug: KeyError

    nav.run_page(render, "Broken")


def _sentences(text: str) -> int:
    return sum(text.count(end) for end in (". ", "; ")) + 1


def test_an_unexpected_error_is_one_sentence_in_the_page_and_a_traceback_in_the_log(caplog):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_broken_page, args=(str(ROOT),), default_timeout=TIMEOUT)
    with caplog.at_level(logging.ERROR, logger="wkviz.app"):
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert errors == ["Something went wrong while drawing the Broken page; the details are in the log."]
    page = " ".join([*errors, *(m.value for m in at.markdown)])
    assert "secret_key_in_the_traceback" not in page and "Traceback" not in page and "KeyError" not in page
    # the log has what a developer needs
    records = [r for r in caplog.records if r.name == "wkviz.app"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert records[0].exc_info[0] is KeyError and "drawing the Broken page" in records[0].getMessage()
    # the page around it still works: its title and the sidebar are drawn
    assert at.title[0].value == "A page with a bug"
    assert "Current session" in " ".join(m.value for m in at.sidebar.markdown)


def test_the_config_hides_error_details_for_anything_no_page_caught():
    from streamlit import config

    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    value = settings["client"]["showErrorDetails"]
    # "none" hides message, type and trace; the legacy false would still show the traceback
    assert value == config.ShowErrorDetailsConfigOptions.NONE


@pytest.mark.parametrize("filename, words", [
    ("x" * 300 + ".xyz", "at most 255 bytes"),
    ("water\x00.xyz", "contains a NUL byte"),
], ids=["long-name", "nul-byte"])
def test_an_upload_name_no_file_system_accepts_is_a_message_on_the_data_page(filename, words):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/1_Data.py").run()
    at.radio(key="data.source").set_value("Upload a file").run()
    water = b"3\nenergy=-14.0\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n"
    at.file_uploader(key="data.upload").set_value((filename, water, "chemical/x-xyz")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and words in errors[0], errors
    assert len(errors[0]) < 400 and "Traceback" not in errors[0]
    assert at.session_state["wk.dataset"].name == "qm9", "a refused upload leaves the current data set in place"


def _page_with_a_failed_job(root):
    import sys

    sys.path.insert(0, root)
    from pages.support import nav, widgets
    from wkviz import cache

    def render():
        def work(progress, cancel):
            return 1 / 0

        job = cache.BackgroundJob(work, label="a test computation", use_engine_lock=False).start()
        job.join(timeout=30)
        widgets.show_job_failure(job)

    nav.run_page(render, "Jobs")


def test_a_background_job_that_fails_with_a_bug_is_one_sentence_and_a_logged_traceback(caplog):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_page_with_a_failed_job, args=(str(ROOT),), default_timeout=TIMEOUT)
    with caplog.at_level(logging.ERROR, logger="wkviz.app"):
        at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Something went wrong in the job “a test computation”; the details are "
                                           "in the log."]
    assert not at.code and not at.expander, "no traceback in the page, not even folded away"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "wkviz.app")
    assert "ZeroDivisionError" in logged and "Traceback" in logged
