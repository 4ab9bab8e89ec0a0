"""meshc fmt: canonical layout, every comment kept beside its node, idempotent, proven by
re-parsing before anything is written."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.syntax.fmt import FormatError, comments_of, format_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.mesh"))
                 + glob.glob(os.path.join(ROOT, "stdlib_policies", "*.mesh")))


def fmt(text: str) -> str:
    return format_text(textwrap.dedent(text), "t.mesh")


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_shipped_files_format_idempotently_with_every_comment(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    out = format_text(text, path)
    assert format_text(out, path) == out
    assert sorted(c.text for c in comments_of(out)) == sorted(c.text for c in comments_of(text))


def test_a_comment_travels_with_its_setting_when_settings_are_reordered():
    out = fmt("""\
        service a {
          # budget first in the source
          retry_budget { percent 20% }
          outlier { consecutive_5xx 3 }  # three strikes
          port 80
          endpoints ["10.0.0.1:80"]
        }
        """)
    assert out == textwrap.dedent("""\
        service a {
          port 80
          endpoints ["10.0.0.1:80"]
          outlier { consecutive_5xx 3 }  # three strikes
          # budget first in the source
          retry_budget { percent 20% }
        }
        """)


def test_comments_inside_a_joined_block_move_above_it_and_closing_comments_stay_inside():
    out = fmt("""\
        service a {
          port 80
          endpoints ["10.0.0.1:80"]
          limits {
            connections 10  # small
            pending 5
          }
          # the end of a
        }
        """)
    assert out == textwrap.dedent("""\
        service a {
          port 80
          endpoints ["10.0.0.1:80"]
          # small
          limits { connections 10  pending 5 }
          # the end of a
        }
        """)


def test_header_and_trailing_file_comments_keep_their_paragraphs():
    out = fmt("""\
        # header line one
        # header line two

        # about a
        service a { port 80  endpoints ["10.0.0.1:80"] }
        # trailing thoughts
        """)
    assert out == textwrap.dedent("""\
        # header line one
        # header line two

        # about a
        service a {
          port 80
          endpoints ["10.0.0.1:80"]
        }

        # trailing thoughts
        """)


def test_a_hash_inside_a_string_is_not_a_comment():
    out = fmt('service a {\n  port 80\n  endpoints ["h#1:80"]  # real\n}\n')
    assert 'endpoints ["h#1:80"]  # real' in out
    assert [c.text for c in comments_of(out)] == ["# real"]


def test_route_and_rule_comments():
    out = fmt("""\
        service a { port 80  endpoints ["10.0.0.1:80"] }
        routes a {
          # the catch-all
          route all {
            to a  # only subset
            timeout 1s
          }
        }
        authorization a {
          default deny
          # ops may read
          allow ops { from namespace "ops"  method GET }
        }
        """)
    assert "  # the catch-all\n  route all {\n    to a  # only subset\n" in out
    assert "  # ops may read\n  allow ops {" in out


def test_syntax_errors_are_reported_not_formatted():
    with pytest.raises(FormatError) as err:
        format_text("service a { port }\n", "bad.mesh")
    assert [d.code for d in err.value.diagnostics] == ["E0101"]


# ---- random comments in the shipped files ------------------------------------------------------

@st.composite
def commented(draw):
    path = draw(st.sampled_from(SOURCES))
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(lines) - 1))
        text = "# c" + str(draw(st.integers(0, 999)))
        if draw(st.booleans()) and "#" not in lines[i]:
            lines[i] = lines[i] + "  " + text
        else:
            lines.insert(i, text)
    return "\n".join(lines)


@settings(max_examples=40)
@given(commented())
def test_random_comments_are_kept_and_formatting_is_idempotent(text):
    out = format_text(text, "t.mesh")
    assert sorted(c.text for c in comments_of(out)) == sorted(c.text for c in comments_of(text))
    assert format_text(out, "t.mesh") == out


# ---- the command ----------------------------------------------------------------------------------

def meshc(*args, cwd=None, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "compiler", "fmt", *args], cwd=cwd, capture_output=True,
                          text=True, input=stdin, env=env)


def test_check_prints_a_diff_exits_1_and_writes_nothing(tmp_path):
    messy = "service a { port 80  endpoints [\"10.0.0.1:80\"] }\n"
    (tmp_path / "a.mesh").write_text(messy)
    proc = meshc("--check", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"--- {tmp_path / 'a.mesh'}") and "+  port 80" in proc.stdout
    assert (tmp_path / "a.mesh").read_text() == messy
    assert "1 file would reformat" in proc.stderr


def test_fmt_rewrites_in_place_keeping_the_mode_then_check_is_clean(tmp_path):
    target = tmp_path / "a.mesh"
    target.write_text("service a { port 80  endpoints [\"10.0.0.1:80\"] }\n")
    os.chmod(target, 0o640)
    assert meshc(str(target)).returncode == 0
    assert target.read_text() == 'service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n'
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert meshc("--check", str(target)).returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["a.mesh"]  # no temporary file left behind


def test_a_file_with_syntax_errors_is_left_alone_and_exits_1(tmp_path):
    (tmp_path / "bad.mesh").write_text("service a { port }\n")
    proc = meshc(str(tmp_path / "bad.mesh"))
    assert proc.returncode == 1 and "E0101" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "bad.mesh").read_text() == "service a { port }\n"


def test_stdin_to_stdout():
    proc = meshc("-", stdin="service a { port 80 endpoints [\"10.0.0.1:80\"] }")
    assert proc.returncode == 0 and proc.stdout == 'service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n'


def test_the_shipped_examples_and_stdlib_are_formatted():
    proc = meshc("--check", os.path.join(ROOT, "examples"), os.path.join(ROOT, "stdlib_policies"))
    assert proc.returncode == 0, proc.stdout
