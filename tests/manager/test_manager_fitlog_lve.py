"""FitLog.lve_index: the lowest valid cost counts only once BOTH the KL and the L2 ramps are done."""

from __future__ import annotations

from manager.results import fit_log

ROWS = [
    # KL ramp done, L2 ramp not: its low valid cost is no LVE candidate (as FitLog.m).
    "epoch,0, step,8, total,500.00,500.00, recon,480.00,490.00, kl,20.00,10.00, l2,0.50000, klweight,1.00, l2weight,0.50",
    "epoch,1, step,16, total,700.00,720.00, recon,690.00,700.00, kl,10.00,20.00, l2,0.40000, klweight,1.00, l2weight,1.00",
    "epoch,2, step,24, total,650.00,710.00, recon,640.00,690.00, kl,10.00,20.00, l2,0.30000, klweight,1.00, l2weight,1.00",
    # L2 ramp done, KL ramp not.
    "epoch,3, step,32, total,600.00,400.00, recon,590.00,695.00, kl,10.00,20.00, l2,0.20000, klweight,0.90, l2weight,1.00",
]


def test_lve_index_waits_for_both_ramps(tmp_path):
    (tmp_path / "lfadsOutput").mkdir()
    (tmp_path / "lfadsOutput" / "fitlog.csv").write_text("\n".join(ROWS) + "\n")
    assert fit_log(tmp_path).lve_index == 2


def test_lve_epoch_is_the_epoch_of_that_row_after_a_restart(tmp_path):
    # The original LFADS counted epochs from 0 again after a restart while its steps went on.
    again = ROWS[1].replace("epoch,1, step,16,", "epoch,0, step,32,").replace("total,700.00,720.00", "total,640.00,705.00")
    restarted = [*ROWS[:3], again]
    (tmp_path / "lfadsOutput").mkdir()
    (tmp_path / "lfadsOutput" / "fitlog.csv").write_text("\n".join(restarted) + "\n")
    log = fit_log(tmp_path)
    assert log.lve_index == 3 and log.lve_epoch == 0
