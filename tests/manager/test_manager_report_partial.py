"""`lfads-manager report` after a posterior step that processed only some trials (--ps_nexamples_to_process)."""

from __future__ import annotations

import re

import numpy as np
from manager_test_helpers import run_manager_cli, write_fake_posterior
from test_manager_results import trained_run  # noqa: F401  (fixture)


def test_the_report_scores_only_the_valid_trials_that_have_posterior_means(trained_run):  # noqa: F811
    write_fake_posterior(trained_run, limit=3)
    result = run_manager_cli("report", str(trained_run.path))
    assert result.returncode == 0, result.stderr
    score = re.search(r"ds: valid-trial rate R² vs truth = (\S+)", result.stdout)
    assert score is not None, result.stdout
    assert np.isfinite(float(score.group(1))), result.stdout  # not nan from the trials left out
    assert float(score.group(1)) > 0.5  # the fake means are truth x 0.9
