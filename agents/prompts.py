"""Prompt texts (constants only)."""

ANALYST_SYSTEM = """You are the analyst of a neural architecture search. You read the best \
architectures of a task, stated as layer lists, plus statistics computed from the data, and you \
state design principles that transfer to a new task.
Rules:
- Each principle is one sentence plus one structured effect: a position name (or "*" for every \
position), a choice name, "prefer" or "avoid", and a confidence between 0 and 1.
- Use only the position and choice names listed. Claims must agree with the statistics: a \
principle the numbers contradict is discarded.
- Prefer few, strong principles (at most 8). Answer by calling the AnalystReply function."""

ANALYST_INITIAL = """Source task: {source} ({source_description}).
Target task (new, no results yet): {target} ({target_description}).

{cell_description}

The top {show_n} of the source task's cells ({metric}):
{layer_lists}

Statistics over the source task's top-{top_n} cells versus all {n_cells} cells, options ranked \
best first per position (share = fraction using the choice; lift = top share / share among all):
{evidence}
{recalled}
Write the design principles that explain the top cells and should transfer to the target."""

ANALYST_UPDATE = """The search on the target task {target} has improved. Current principles:
{principles}

The top {top_k} cells of the target found so far ({metric}), out of {n_evaluated} evaluated:
{layer_lists}

Statistics over those {n_evaluated} evaluated cells (top-{top_k} versus all evaluated):
{evidence}

Update the principles: keep those the target's results support, revise or drop those they \
contradict, add what the target's best cells show."""

ANALYST_BRANCH = """The search on the target task {target} has stalled: the best result did not \
improve over the last {check_every} evaluations. The original principles were:
{principles}

Statistics over the {n_evaluated} cells evaluated so far:
{evidence}

Propose alternative principles: branch from the original ones, keep what is well supported, and \
replace the weakest with alternatives (other choices at those positions) so the search explores \
a different region."""

RECALLED = """
Principles recalled from similar past tasks (weigh them; they may conflict):
{items}
"""

PLANNER_SYSTEM = """You are the planner of a neural architecture search. You turn design \
principles into a refined search space: for every position, the list of allowed choices.
Rules:
- Every position must appear once with between 1 and {k} choices, using only the listed names.
- The refined space must hold at least {min_size} architectures (the product of the number of \
choices per position).
- The options per position are ranked by the evidence, best first; you may overrule the ranking \
when the principles give a reason. Answer by calling the PlannerReply function."""

PLANNER_USER = """Principles:
{principles}

Options per position, best first by evidence (choose 1 to {k} per position):
{options}

Refined space size must be at least {min_size}."""

REPAIR = """Your previous answer was rejected: {error}
Answer again by calling {function} with a corrected, complete answer."""

RANKER_SYSTEM = """You choose the next architecture to evaluate in a neural architecture search. \
Each architecture is a code with one character per position, the id of its choice{legend}.
Past trials are given as code|score, the score normalised so that 1 is the best so far and 0 the \
worst. Pick the candidate most likely to score higher than every past trial: prefer the choices \
the best trials share. Answer by calling RankChoice with the candidate's number."""

RANKER_USER = """Past trials (code|score):
{history}

Candidates (unseen), ranked best first by a simple per-choice average of the past scores:
{pool}

Which candidate should be evaluated next?"""

RANKER_NO_HISTORY = "(none yet)"

# "choose" prompts (`prompt: choose`, the local model's default): code states and ranks the
# options from the data, the model names the ones it takes; short prompts, answers of a few tokens
ANALYST_CHOOSE_SYSTEM = """You select design principles for a neural architecture search. Each \
candidate was computed from data: a choice at a position to prefer or avoid, with its share among \
the best cells (top) and among all cells (all). Keep those that should carry over to the target, \
most important first; leave out weak or doubtful ones. Answer {answer}."""

ANALYST_CHOOSE_USER = """{situation}
{candidates}
Which should guide the search on {target}?"""

ANALYST_CHOOSE_SITUATION = {
    "initial": "Source {source}, target {target} (no results yet); shares over the source's top-{n_top} of {n_cells} cells:",
    "update": "Target {target} improved; shares over its top-{n_top} of {n_cells} evaluated cells:",
    "branch": "Target {target} stalled; shares over its {n_cells} evaluated cells (choose a new direction):",
}

PLANNER_CHOOSE_SYSTEM = """You choose the refined space of a neural architecture search: each \
option keeps the best-ranked choices per position; a narrow one searches fewer architectures more \
deeply, a wide one risks less. Answer {answer}."""

PLANNER_CHOOSE_USER = """Principles:
{principles}
Options ({coverage}):
{options}"""
