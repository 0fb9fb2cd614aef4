import pytest
from test_bad_input import *  # noqa

@pytest.mark.parametrize("magic,line", [
    ("sm_jobs", "--name 'a b'"), ("sm_jobs", "--limit 5 --name é"), ("sm_logs", "x --tail 0"),
    ("sm_jobs", "--name " + "a"*70),
])
def test_probe(shell, magic, line):
    check(magic, lambda: shell.run_line_magic(magic, line))
