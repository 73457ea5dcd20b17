"""Lab exercises: the story as labs that check themselves against the live cluster.

`catalog` loads the lab folders (`labs/NN-name/`), `checks` runs their checks, `progress` keeps
the learner's answers and hints, `cli` is the `emunet lab` verb.
"""
