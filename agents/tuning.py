"""Every tuned constant of the analyst, the planner and the guided search, in one frozen object.

The values are those the code has used since the first agent commits (01c18fb, 8038517, 1bc17bf,
0e82159). None of those commits records a tuning set or a selection procedure: they were set by
hand while the agents were developed on NAS-Bench-201, and the only measurements made with them are
the `--llm none` tables in benchmarks/README.md (every NB201 and TransNAS-Bench-101 micro pair,
seeds 0-99). No held-out split exists, so those tables are not an unbiased estimate for these
values. Each comment says where the value comes from; change one only with a re-run of the tables.

Functions take a `tuning: Tuning = TUNING` parameter; a run that wants other values passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Tuning:
    # --- statistical principles from choice shares (source evidence, run summaries) ---------------
    # a choice is preferred when it is among the 2 most frequent in the top cells, appears there
    # at least twice and is over-represented by this lift (the runner-up needs more); by hand in
    # 01c18fb, runner-up rule added in 8038517; the test fixture is NB201 cifar10 top-50
    prefer_top_choices: int = 2
    prefer_min_count: int = 2
    prefer_lift: float = 1.25
    prefer_lift_runner_up: float = 1.5
    # confidence of a preference = its top share, clipped; by hand (01c18fb)
    prefer_confidence_clip: tuple[float, float] = (0.2, 0.95)
    # a choice is avoided when at least this share of all cells has it and its lift is at most
    # this (about a third of its base rate); by hand (01c18fb)
    avoid_min_base_share: float = 0.1
    avoid_max_lift: float = 0.34
    # confidence of an avoidance = 1 - lift, clipped; by hand (01c18fb)
    avoid_confidence_clip: tuple[float, float] = (0.3, 0.95)
    # at most this many principles from one evidence table (prefers first); by hand (01c18fb)
    max_evidence_principles: int = 16

    # --- principles from this run's own evaluations (update / branch) ---------------------------
    # a choice's standardised mean difference must reach this to become a principle, with at least
    # `effect_min_with` cells having it and `effect_min_cells` evaluated; by hand (01c18fb)
    effect_threshold: float = 0.3
    effect_min_with: int = 2
    effect_min_cells: int = 4
    # confidence = |effect| / 2, clipped; by hand (01c18fb)
    effect_confidence_clip: tuple[float, float] = (0.2, 0.95)
    max_effect_principles: int = 12
    # top cells of the run fed back: min(top_k, max(run_top_min, evaluated // run_top_divisor))
    run_top_min: int = 2
    run_top_divisor: int = 3

    # --- checking an LLM's claims against the statistics ------------------------------------------
    # a "prefer" claim is contradicted below this lift, an "avoid" claim above that one; by hand
    # (01c18fb); tests/test_agents.py checks them on NB201 cifar10 claims
    verify_prefer_min_lift: float = 0.8
    verify_avoid_max_lift: float = 1.25

    # --- carrying principles across rounds ------------------------------------------------------
    # old principles keep this share of their confidence per update round (01c18fb); recalled
    # memories 0.9 at the start (1bc17bf: "recalled principles weigh more", measured with the
    # memory transfer experiment of benchmarks/transfer.py); a branch keeps the better half of the
    # originals undecayed (1.0)
    update_decay: float = 0.7
    recall_decay: float = 0.9
    branch_decay: float = 1.0
    branch_keep_share: float = 0.5
    # a carried principle below this confidence is dropped (01c18fb)
    min_carried_confidence: float = 0.15

    # --- planner: when dropping the evidence's favourite gets a question back (0e82159) ----------
    # the favourite is "clear" with at least this top share and lift; by hand in 0e82159, where the
    # test's example is NB201 cifar10's edge3<-0 skip_connect (100% of the top cells, lift 5)
    conflict_min_top_share: float = 0.4
    conflict_min_lift: float = 2.0

    # --- guided REA (tools/strategies.py GuidedREA.temperature, passed by the graph) -------------
    # Gumbel noise scale on principle weights; lowered from 0.5 in 8038517 (no record of the runs)
    guided_temperature: float = 0.25

    # --- what `show` prints ------------------------------------------------------------------------
    max_statements_shown: int = 6


TUNING = Tuning()
