"""The chapters' open-ended exercises as questions that check themselves: one `Question` per exercise of a
chapter's "Exercises" block, in `QUESTIONS`. The exercise asks for an experiment or a piece of reasoning; its
question asks for the reasoning, as a choice of letters whose right answer rests on the repository (a
docstring, the code, a benchmark result). `labkit.exercises` checks, hints, shows and solves them, beside the
fill-in-the-missing-line exercises; this module is their data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["QUESTIONS", "Question"]


@dataclass(frozen=True)
class Question:
    """One question on the reasoning an open-ended chapter exercise is after: the learner picks the letter(s)."""

    key: str
    """"<chapter>.<name>", e.g. "04.lam"; the chapter's exercise block names it in its check line."""
    question: str
    """The reasoning the exercise asks for, as one question."""
    choices: Mapping[str, tuple[str, str]]
    """letter -> (the choice, why it is right or wrong): `show` prints the first, `check` answers with the second."""
    right: str
    """The right letter(s), e.g. "c", or "ac" when two are right and both are needed."""
    hint: str
    """A nudge towards where the answer is, without giving it."""
    solution: str
    """The worked reasoning, naming the docstring, code or benchmark result it rests on."""
    minutes_on_cpu: float = 0.0
    """How long the experiment the exercise asks for runs on a 2-core laptop CPU (0: no run). One of a
    minute or more is also written in the chapter's check line; its source is a comment beside the value."""
    close: str = ""
    """Letters that are partly right: `check` says "close", with why. With several right letters, a part of
    them (and no wrong one) is close too."""

    def __post_init__(self):
        object.__setattr__(self, "choices", MappingProxyType(dict(self.choices)))  # frozen all the way down
        letters = "".join(self.choices)
        problems = [
            (3 <= len(letters) <= 4 and letters == "abcd"[: len(letters)], "3 or 4 choices, lettered a, b, c(, d)"),
            (bool(self.right) and set(self.right) <= set(letters), f"right letter(s) among {letters}"),
            (set(self.close) <= set(letters) - set(self.right), "close letters among the choices, none of them right"),
            (all(text and why for text, why in self.choices.values()), "a text and an explanation for every choice"),
        ]
        for ok, need in problems:
            if not ok:
                raise ValueError(f"question {self.key!r} needs {need}")


QUESTIONS: dict[str, Question] = {
    q.key: q
    for q in [
        Question(
            key="00.sampling_temperature",
            question="You sample at temperature=0.3 and at temperature=1.5. What does the temperature change, "
            "and why do the rude share and the number of distinct replies move?",
            choices={
                "a": (
                    "Dividing the logits by T < 1 widens their gaps, so each step's likeliest tokens win more often: "
                    "fewer distinct replies, and the rude share heads for whatever the model says most. T > 1 "
                    "flattens the distribution, so rarer tokens and styles come up more.",
                    "Sampling draws from softmax(logits / T) (exercise 00.temperature): T < 1 sharpens, T > 1 "
                    "flattens. The weights are the same at every T; only which tokens are drawn changes.",
                ),
                "b": (
                    "At T = 0.3 the model has become more careful: the temperature scales its weights.",
                    "Temperature acts only while sampling, on the logits (a keyword of generate.generate): the "
                    "weights are the same at every T, so nothing was learnt.",
                ),
                "c": (
                    "At low T the replies are shorter, and shorter replies are more alike.",
                    "Length is set by max_new_tokens and by where an end-of-sequence token is drawn; what makes the "
                    "samples alike is the sharper distribution they are drawn from.",
                ),
                "d": (
                    "T = 1.5 samples the model's own distribution, which PPO and the KL estimates assume.",
                    "T = 1 is the model's own distribution (GLOSSARY.md, Temperature; PPOConfig.temperature): 1.5 "
                    "flattens it.",
                ),
            },
            right="a",
            hint='Look at what exercises.solution("00.temperature") does to the logits, and so to the largest '
            "probabilities.",
            solution="(a). Sampling draws each token from softmax(logits / T) (notebooks/GLOSSARY.md, Temperature). "
            "T < 1 stretches the gaps between the logits, so the likeliest tokens take more of the mass: one "
            "prompt's samples look alike, and the rude share moves towards the style the model says most for that "
            "prompt (its pretraining mix is world.PRETRAIN_MIX). T > 1 squeezes the gaps: rare tokens come up, "
            "replies vary more and break more often. Nothing is learnt; the same weights give every run. The lab "
            "samples at T = 1 because PPO's maths and the KL estimates assume the model's own distribution "
            "(PPOConfig.temperature, EvalConfig.temperature).",
            # INSTRUCTOR.md: chapter 00 runs whole in 15 s in order; two samplings of its section 4 take at most
            # twice that.
            minutes_on_cpu=0.5,
        ),
        Question(
            key="00.high_gold_reply",
            question="Can a reply get a high gold utility and still be one you would not want to read? Why?",
            choices={
                "a": (
                    "No: the gold utility is the truth by definition, so every high-gold reply is good.",
                    "Gold is the lab's referee, but it is a rule the world's code applies to words (World.gold), and "
                    "a rule can be met without the quality it stands for: Goodhart's law holds for it too.",
                ),
                "b": (
                    "Yes, by making the reply long: gold pays for length.",
                    "world.GOLD_WEIGHTS has no length term; length enters only as the degeneration term's "
                    '"too short" (under 8 words).',
                ),
                "c": (
                    "Yes: gold checks words and sentence form, not sense, so a reply built to its rules can score "
                    "high and still read badly.",
                    "Every term is computed from the text's words (labkit/world.py, module docstring): a tip counts "
                    "when one sentence holds 70% of its content words, in any order; relevance counts the topic's "
                    "words; fluency checks capitals, end punctuation, sentence length and known words.",
                ),
                "d": (
                    "Yes, by adding a mild insult: toxicity raises the utility.",
                    "Toxicity weighs -0.8 in world.GOLD_WEIGHTS: an insult from the world's lexicon or templates "
                    "lowers the utility.",
                ),
            },
            right="c",
            hint="Read how labkit/world.py's module docstring computes helpfulness and fluency: from what?",
            solution="(c). World.gold is a weighted sum of five terms (world.GOLD_WEIGHTS), each a rule over the "
            "reply's words and sentences (labkit/world.py, module docstring): helpfulness counts a topic's tip when "
            "a sentence contains 70% of its content words in any order, relevance the topic's words, fluency the "
            "sentences' form and known vocabulary. None of them reads for sense, so a pile of tip words in tidy "
            "sentences can score high. The lab still treats gold as the truth because it is a definition the world "
            "wrote and no method is ever trained on it (GLOSSARY.md, Gold utility): an optimiser pointed at it "
            "would find its blind spots like any other reward's.",
            minutes_on_cpu=0,  # scoring a reply by hand: no run
        ),
        Question(
            key="00.repeated_reply",
            question="Score a helpful reply with w.gold, then the same reply repeated three times. Which term moves?",
            choices={
                "a": (
                    "helpfulness rises: the tips now appear three times.",
                    "Helpfulness counts the DISTINCT tips of the topic, min(1, n / 2.5) (labkit/world.py): a copy "
                    "adds no new tip.",
                ),
                "b": (
                    "relevance rises: more topic words.",
                    "Relevance is computed on the SET of the reply's words (coverage times purity): a copy adds no "
                    "new word.",
                ),
                "c": (
                    "fluency falls: the reply is three times as long.",
                    "Fluency averages each sentence's form and the share of known words: the copies have the same "
                    "form and words, so it does not move.",
                ),
                "d": (
                    "degeneration rises, and the utility falls with it.",
                    "Degeneration is the largest of repeated sentences, repeated word trigrams, one dominating word "
                    "and shortness: two sentences in three are now repeats, and it weighs -0.6 in GOLD_WEIGHTS.",
                ),
            },
            right="d",
            hint="For each gold term in labkit/world.py's module docstring, ask: does it count, or count distinct?",
            solution="(d). Of the five gold terms only degeneration looks at repetition (labkit/world.py, module "
            "docstring: the max of repeated sentences, repeated trigrams, one dominating word, too short). Three "
            "copies make two sentences in three repeats, so degeneration jumps, and at -0.6 in world.GOLD_WEIGHTS "
            "the utility falls. Helpfulness counts distinct tips, relevance the set of words, fluency an average "
            "per sentence: all unchanged. Chapter 03 probes a reward model with the same edit ('helpful x3'): it "
            "has seen almost no repeated replies, so whatever it says there is extrapolation.",
            minutes_on_cpu=0,  # two calls of w.gold: no run
        ),
        Question(
            key="01.who_is_right",
            question="You and the careful persona order an item differently. In this lab, what settles who is right?",
            choices={
                "a": (
                    "The majority of the five personas.",
                    "The personas weigh the terms their own way (labelers.PERSONAS: safety_first, tips_lover, "
                    "brevity) and noisy_crowdworker answers one item in four at random: their majority is an "
                    "opinion, not the truth.",
                ),
                "b": (
                    "careful, always: it ranks by the world's gold weights.",
                    "Its weights are world.GOLD_WEIGHTS, but it adds Gumbel noise (0.02) and ties scores closer "
                    "than its tie_margin (0.02): where two replies' gold utilities are close it can order them "
                    "differently from gold. Check w.gold on them.",
                ),
                "c": (
                    "The world's gold utility of the replies, w.gold(prompt, reply).utility: the lab's definition "
                    "of a good reply, which careful follows up to a little noise.",
                    "The tiny world knows the truth (chapter 00): w.gold scores any reply, and careful is the persona "
                    "built to follow it (labelers.PERSONAS['careful'].weights == world.GOLD_WEIGHTS).",
                ),
                "d": (
                    "You, always: the personas are only simulations.",
                    "Your ranking counts as a labeler's in the reward model (chapter 03), but 'right' in this lab "
                    "means agreeing with the gold utility, which you can compute and check.",
                ),
            },
            right="c",
            close="b",
            hint='Compare labelers.PERSONAS["careful"].weights with world.GOLD_WEIGHTS, then read its noise and '
            "tie_margin.",
            solution="(c). The tiny world defines a reply's quality as its gold utility (World.gold), the one truth "
            "the lab has. careful ranks by exactly world.GOLD_WEIGHTS (labkit/labelers.py, PERSONAS) but adds Gumbel "
            "noise of 0.02 and calls scores within 0.02 a tie, so on close replies it can be wrong: (b) is close. "
            "Compute w.gold(item.prompt, text).utility for the item's replies and see whose order it follows. "
            "Other personas disagree with careful by design (their weights), and the crowdworker by noise.",
            # INSTRUCTOR.md: chapter 01 runs whole in 12 s in order; redoing section 5 is a part of that.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="01.restart_and_undo",
            question="You rank two items, restart the kernel and run the cells again; then you Undo and submit one "
            "ranking again. Where does the widget open, how many lines has my_rankings.jsonl, and which does "
            "my_store.latest() keep?",
            choices={
                "a": (
                    "At the first item; two lines: Undo rewrote the corrected line in place.",
                    "The store never rewrites a line (labkit/labels.py: append-only; only export and merge rewrite "
                    "a file), and a restarted widget opens at the first item you have not ranked.",
                ),
                "b": (
                    "At the third item; three lines; latest() keeps the one submitted again, the later line.",
                    "The widget opens at the first unranked item (RankingStore.next_unranked); a correction appends "
                    "a newer record; latest_records keeps the later one in the file per (labeler, item, criterion).",
                ),
                "c": (
                    "At the third item; three lines; latest() keeps the one with the newest timestamp.",
                    "The place and the count are right, but the rule is the order in the file, not the timestamp: "
                    "labels.py never compares timestamps, because clocks differ between laptops.",
                ),
                "d": (
                    "At the third item; two lines: Undo deleted the old line before the new one was written.",
                    "Nothing is ever deleted: Undo only takes the widget back an item, and Submit appends.",
                ),
            },
            right="b",
            close="c",
            hint="Read labkit/labels.py's module docstring, the paragraphs on durability and on 'Latest'.",
            solution="(b). Each Submit appends one fsync'd line (labkit/labels.py, Durability), so two rankings are "
            "two lines and a restart loses nothing; the rebuilt widget opens at the first item this labeler has "
            "not ranked (labkit/widgets.py; RankingStore.next_unranked). Undo goes back one item, and submitting "
            "again appends a third line; RankingStore.latest() keeps, per (labeler, item, criterion), the record "
            "later in the file (labels.latest_records). Timestamps are not compared: clocks differ between laptops, "
            "which is why (c) is only close.",
            # INSTRUCTOR.md: chapter 01 runs whole in 12 s in order; rerunning its cells takes no longer.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="01.long_replies_persona",
            question="Your persona likes long replies (a positive length weight) and has no toxicity penalty. What "
            "would a reward model trained on its rankings alone teach the policy to write?",
            choices={
                "a": (
                    "The same as careful's: the reward model corrects the labels towards the gold utility.",
                    "A reward model sees only the pairs, and no method is ever trained on gold (GLOSSARY.md, Gold "
                    "utility): it learns the labelers' taste, whatever that is.",
                ),
                "b": (
                    "Long replies whatever their content, with no reason to avoid rudeness.",
                    "A reward model learns what its labelers' rankings reward, and PPO optimises exactly that: "
                    "nobody tells the policy 'do not be rude' except labelers who rank rude replies last "
                    "(chapter 04's summary).",
                ),
                "c": (
                    "Enthusiastic fluff above all, since the persona loves enthusiasm.",
                    "A persona can weigh only the world's gold terms and length (rank_with_persona refuses any other "
                    "term): it cannot see enthusiasm, and fluff wins only where it is longer.",
                ),
                "d": (
                    "Nothing: one labeler's rankings are averaged away in training.",
                    "Trained on its rankings alone there is nothing to average them with; and even mixed in, "
                    "chapter 03 repeats a learner's pairs learner.LEARNER_WEIGHT times so that they count.",
                ),
            },
            right="b",
            hint="What does a persona's score add up (labkit/labelers.py, step 1), and what does a reward model see?",
            solution="(b). A persona scores a reply as the sum of its weights times the world's gold terms and length "
            "(labkit/labelers.py, step 1), so yours ranks long replies first and never sinks a rude one. A reward "
            "model trained on those pairs learns that order and nothing else (labkit/reward_model.py); PPO then "
            "pushes the policy towards what the reward model pays for. In chapter 04 toxicity fell only because "
            "the labelers ranked rude replies last: with this persona's labels it would not.",
            # INSTRUCTOR.md: chapter 01 runs whole in 12 s in order; simulating one persona is a part of that.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="02.noisy_vs_consensus",
            question="Why can noisy_crowdworker agree better with the consensus than with any single other labeler? "
            "(Two letters are right.)",
            choices={
                "a": (
                    "Its own ranking is one of the five the consensus averages: part of the consensus is itself.",
                    "agreement.consensus averages the Borda points of every labeler who ranked the item, the "
                    "crowdworker included.",
                ),
                "b": (
                    "Kendall's tau with the consensus leaves out the items it answered at random.",
                    "tau is averaged over every item both ranked (labkit/agreement.py, Metrics): nothing marks an "
                    "answer as random.",
                ),
                "c": (
                    "Averaging five labelers cancels part of each one's noise and quirks, and the crowdworker is "
                    "right on average; against one other labeler, that labeler's noise and quirks add to its own.",
                    "Its weights are the world's gold weights, careful's too (labelers.PERSONAS): only its noise "
                    "and random answers set it apart, and an average of five is steadier than any one of them.",
                ),
                "d": (
                    "The consensus drops flagged replies, where the crowdworker disagrees most.",
                    "Flagged replies are not dropped: one a majority flagged goes below every clean reply "
                    "(labkit/agreement.py, consensus rule 3), and every labeler's flags count in that vote.",
                ),
            },
            right="ac",
            hint="What goes into agreement.consensus, and whose rankings are in it?",
            solution="(a) and (c). The consensus is the mean of all five labelers' Borda points "
            "(labkit/agreement.py, consensus rule), so the crowdworker is compared partly with itself. And "
            "averaging cancels part of the other labelers' quirks (safety_first's, tips_lover's, brevity's weights) "
            "and noise, leaving something close to the gold order that the crowdworker follows on average (its "
            "weights are the gold weights; labelers.PERSONAS). Against one other labeler, both labelers' noise and "
            "that labeler's quirks count.",
            # INSTRUCTOR.md: chapter 02 runs whole in 13 s in order; five Kendall taus are a part of that.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="02.borda_vs_mean_rank",
            question='Borda and method="mean_rank" give the same consensus whenever no labeler uses a tie. Why, and '
            "where do they part?",
            choices={
                "a": (
                    "Without ties a reply's Borda points are n minus its position, so the mean Borda is n minus the "
                    "mean position: the same order. A tie breaks that: tied replies share the mean of their "
                    "positions but get Borda points only for the replies strictly below them.",
                    "Both rules are in labkit/agreement.py (consensus rule 1): a position for each reply (the mean "
                    "of the positions a tie occupies) and Borda points (replies strictly below).",
                ),
                "b": (
                    "Borda demotes flagged replies and mean_rank does not.",
                    "Both demote a reply a strict majority flagged, the same way (consensus rule 3): the method "
                    "changes only the score.",
                ),
                "c": (
                    "They always agree: a tie counts the same under both.",
                    "Two labelers, 'x > y > z' and 'y = z > x', give Borda x = y > z but mean rank y > x > z "
                    "(the solution works it through).",
                ),
                "d": (
                    "mean_rank ignores tied replies.",
                    "Tied replies get the mean of the positions they occupy (consensus rule 1): nothing is ignored.",
                ),
            },
            right="a",
            hint="Write a reply's Borda points in terms of its position when every group has one reply, then with a "
            "group of two.",
            solution="(a). With no ties, the reply in position p of n has n - p replies below it, so its Borda points "
            "are n - p and the mean over labelers is n minus the mean position: the same order (labkit/agreement.py, "
            "consensus rule). In a tie the two part: tied replies get the mean of their positions, but Borda points "
            "only for the replies strictly below. Example: labels.hand_record('x > y > z', labeler='ann') and "
            "hand_record('y = z > x', labeler='bob'). Borda points: x 2 + 0, y 1 + 1, z 0 + 1, so x = y > z. Mean "
            "position: x (1 + 3) / 2 = 2, y (2 + 1.5) / 2 = 1.75, z (3 + 1.5) / 2 = 2.25, so y > x > z.",
            # INSTRUCTOR.md: chapter 02 runs whole in 13 s in order; one more consensus is a part of that.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="02.tied_pairs",
            question="With keep_ties=True a tied pair is kept once, in display order. What does the Bradley-Terry "
            "loss -log sigmoid(r_chosen - r_rejected) learn from it?",
            choices={
                "a": (
                    "That the reply shown first is the better one: a preference nobody stated, set by the display "
                    "order.",
                    "labkit/pairs.py, rule 3: a kept tie is one pair in display order, and the loss cannot tell it "
                    "from a real preference.",
                ),
                "b": (
                    "To give the two replies the same reward.",
                    "That needs both orders: the loss of (x, y) plus (y, x) is smallest at equal rewards. Written "
                    "once, the pair keeps pushing the first reply's reward above the second's.",
                ),
                "c": (
                    "Nothing: the loss of a tied pair is zero.",
                    "-log sigmoid(m) is log 2 at m = 0 and falls only as m grows: a tied pair is never free, and "
                    "its gradient pushes m up.",
                ),
                "d": (
                    "To raise both replies' rewards.",
                    "Only the difference r_chosen - r_rejected enters the loss (GLOSSARY.md, Bradley-Terry loss); "
                    "the level is free.",
                ),
            },
            right="a",
            hint="Write the loss of one pair (x, y) as a function of m = r_x - r_y: where is its minimum?",
            solution="(a). build_pairs(keep_ties=True) keeps a tie as ONE pair, in display order (labkit/pairs.py, "
            "rule 3). The Bradley-Terry loss of that pair keeps falling as r_first - r_second grows: it has no "
            "minimum at equality, so it teaches that the first-shown reply is better, which the labeler never said. "
            "A loss that can use 'equally good' needs the tie said differently: both orders (whose summed loss is "
            "smallest at equal rewards) or a term for ties; the default drops ties.",
            # INSTRUCTOR.md: chapter 02 runs whole in 13 s in order; building the pairs again is a part of that.
            minutes_on_cpu=0.2,
        ),
        Question(
            key="03.one_labeler",
            question="One reward model trained on careful's pairs, another on noisy_crowdworker's. Why would "
            "careful's teach more per pair?",
            choices={
                "a": (
                    "careful's rankings give more pairs per item.",
                    "If anything the opposite: careful calls scores within 0.02 a tie (tie_margin), and a tie gives "
                    "no pair; the crowdworker never ties (tie_margin=0).",
                ),
                "b": (
                    "The crowdworker weighs different things.",
                    "Its weights are careful's, the world's gold weights (labelers.PERSONAS): it is right on average.",
                ),
                "c": (
                    "Noise makes no difference: the consensus test pairs are just as noisy.",
                    "The consensus gives one vote per item from five labelers, so one labeler's random answers no "
                    "longer count as truth (chapter 02, section 6): that is why it is the test set.",
                ),
                "d": (
                    "A quarter of the crowdworker's rankings are random and the rest are noisy, so many of its pairs "
                    "point the wrong way, and the loss fits them as faithfully as the right ones.",
                    "flip_rate=0.25 (a shuffled ranking) and Gumbel noise 0.3 against careful's 0.02 "
                    "(labelers.PERSONAS); the Bradley-Terry loss has no way to know which pairs are wrong.",
                ),
            },
            right="d",
            hint="Compare the two personas' rows of labelers.personas_table(): weights, noise, tie_margin, flip_rate.",
            solution="(d). The two personas share the world's gold weights; they differ in noise (0.3 against 0.02) "
            "and in flip_rate (one ranking in four shuffled at random; labkit/labelers.py). The Bradley-Terry loss "
            "fits every pair it is given, so the crowdworker's wrong-way pairs teach the wrong order, and the "
            "consensus test pairs, one vote per item, show it. Careful labelers cost more per label but each label "
            "says more. The chapter's filter splits row['labeler'] at commas because build_pairs merges identical "
            "pairs and joins their labelers (labkit/pairs.py, rule 5): an == test would keep only the pairs one "
            "labeler gave alone.",
            # benchmarks/results/exercises.json: 159 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=3,
        ),
        Question(
            key="03.hack_by_hand",
            question="You wrote a reply the reward model scores above the helpful probe while gold scores it lower. "
            "What weakness does such a hack use, and would the KL penalty of chapters 04-05 stop a policy from "
            "finding it?",
            choices={
                "a": (
                    "None: a reward model with a high held-out accuracy agrees with gold everywhere.",
                    "Accuracy averages over test pairs like the ones it was trained on; on repeated or off-topic "
                    "replies it has rarely seen, it extrapolates (chapter 03, sections 4-5; "
                    "reward_model.hackability).",
                ),
                "b": (
                    "Replies unlike its training data (a helpful reply repeated, real tips for another topic), where "
                    "the reward model extrapolates. The KL penalty does not forbid such a reply, it prices it: a "
                    "policy takes it where the reward gained pays the KL it costs.",
                    "GLOSSARY.md, KL penalty and beta: the policy moves only where the reward pays more than the move "
                    "costs; chapter 05, section 4b gives PPO the preference model at beta = 0.01 to see what it "
                    "exploits.",
                ),
                "c": (
                    "The KL penalty makes any hack impossible: the policy cannot leave the reference.",
                    "beta is an exchange rate, not a wall (GLOSSARY.md, KL penalty and beta): too small, and the "
                    "policy drifts into reward hacking.",
                ),
                "d": (
                    "Toxic words: the reward model scores only toxicity.",
                    "It learnt the labelers' rankings, which weigh relevance, helpfulness, fluency, toxicity and "
                    "degeneration (labelers.PERSONAS): that is why off-topic tips can fool it.",
                ),
            },
            right="b",
            hint="Which probes in chapter 03's sections 4 and 5 look least like the training replies?",
            solution="(b). A reward model is right near the replies it learnt from (GLOSSARY.md, Proxy reward). "
            "Chapter 03 points at its likely cracks: the helpful reply repeated (gold's degeneration term, which the "
            "reward model has almost never seen) and off-topic tips (it learnt 'sounds like concrete advice' more "
            "than 'answers this question'); reward_model.hackability lists the cheap edits it prefers although "
            "gold falls. The KL penalty charges beta * k1 per token (ppo.py, step 4), so a hack close to the "
            "reference is cheap and a far one dear: it slows the policy, and a large enough beta keeps it near the "
            "early, honest gains (chapter 05), but no beta forbids a hack that pays.",
            minutes_on_cpu=0,  # scoring a few replies with the saved reward model: no run
        ),
        Question(
            key="03.rude_without_profanity",
            question="A reply you find rude has P(toxic) below 0.1 (rude, but no profanity). Which of the three "
            "toxicity rewards (logit, prob, binary) reliably scores it below a polite reply?",
            choices={
                "a": (
                    "binary",
                    "Both replies are below the 0.5 threshold, so both get 1.0 (rewards.ToxicityReward): the "
                    "pass/fail reward sees no difference at all.",
                ),
                "b": (
                    "prob",
                    "1 - P(toxic) is above 0.9 for both and flat near 1: any difference is small, and it comes from "
                    "the same classifier that missed the rudeness.",
                ),
                "c": (
                    "logit",
                    "The logit always differs a little (it is unbounded), but in whichever direction the SVM's word "
                    "weights point, not by rudeness.",
                ),
                "d": (
                    "None of them: all three are read off one classifier, so none sees what it misses. A policy "
                    "trained on it can stay rude without profanity at no cost; an independent judge may catch it.",
                    "logit, prob and binary all come from alt-profanity-check's SVM (rewards.ToxicityReward; "
                    "toxicity_reward_plot draws the other two against its logit). Chapter 06 reports a judge that "
                    "shares no machinery with it for this reason.",
                ),
            },
            right="d",
            hint="Where do the three rewards come from? Look at rewards.toxicity_reward_plot's axes.",
            solution="(d). ToxicityReward's three kinds are the SVM's non-toxic logit, 1 - its P(toxic), and "
            "P(toxic) < 0.5 (labkit/rewards.py): one classifier, three shapes. Rudeness it has no n-grams for is "
            "invisible to all three; binary even gives the rude and the polite reply the same 1.0. A policy trained "
            "against it can keep that rudeness, or learn it, at no cost in reward, and measured by the same SVM that "
            "reads as success (Goodhart's law). Chapter 06's headline judge, MiniLM with a head fitted on "
            "project-labelled replies that include rudeness without profanity, is the second opinion that can "
            "catch it; the world's rule (World.is_rude) settles it in the tiny world.",
            minutes_on_cpu=0,  # scoring a few replies with the classifier: no run
        ),
        Question(
            key="04.k3_penalty",
            question='The penalty uses kl_estimator="k3" instead of k1. Both estimate the same KL without bias. Why '
            "can the two runs still differ?",
            choices={
                "a": (
                    "They cannot: the same mean gives the same training.",
                    "The penalty is paid per token, as a reward (ppo.py, step 4), and GAE turns each token's reward "
                    "into advantages: what counts is which tokens pay how much, not the batch's mean.",
                ),
                "b": (
                    "Per token they charge differently: k1 = log(p / p_ref) is a bonus where the reference liked the "
                    "token more, k3 is never negative and near 0 about half the squared log-ratio. Other tokens pay, "
                    "so the advantages and the update differ.",
                    "ppo_math.kl_penalty; GLOSSARY.md, k1 and k3 estimators. objective/kl logs k1 in both runs "
                    "(ppo.METRIC_DOCS), so it stays comparable.",
                ),
                "c": (
                    "k3 is biased, so it pulls the policy towards another target.",
                    "Both are unbiased (ppo_math.kl_penalty; GLOSSARY.md, k1 and k3 estimators).",
                ),
                "d": (
                    "The penalty is backpropagated through the reference model, and k3's gradient is larger.",
                    "The rewards are computed under torch.no_grad() from the rollout's log-probs (ppo.py, step 4): "
                    "the penalty is a number fed to GAE, and the reference is frozen.",
                ),
            },
            right="b",
            hint="Compute k1 and k3 for one token whose log-ratio log p - log p_ref is -0.5, then +0.5.",
            solution="(b). labkit charges the penalty per token inside the reward, -beta * kl_penalty(logp, ref_logp, "
            "cfg.kl_estimator), and GAE turns those per-token rewards into advantages (ppo.py, steps 4-5). The two "
            "estimators agree on average but not token by token: at log-ratio -0.5, k1 = -0.5 (a bonus) while "
            "k3 = e^0.5 - 1 - 0.5 = 0.149; at +0.5, k1 = 0.5 and k3 = e^-0.5 - 1 + 0.5 = 0.107. So k3 charges every "
            "move away from the reference, small ones little, and pays no bonus: different tokens are pushed. "
            "objective/kl is the k1 estimate in both runs (ppo.py, step 7), so compare the runs on it and on the "
            "held-out numbers of section 4.",
            # benchmarks/results/exercises.json: 94 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="04.lam",
            question="With lam=0.95 (old TRL's default) instead of 1.0, what happens to gold helpfulness, and why? "
            "(Read PPOConfig.lam.)",
            choices={
                "a": (
                    "Nothing: lam only affects the critic.",
                    "lam shapes the advantages the policy loss uses (ppo_math.gae): A_t sums the later TD errors "
                    "weighted by (gamma * lam)^l.",
                ),
                "b": (
                    "It rises: a lower-variance advantage always helps.",
                    "The lower variance is paid for with the critic's bias: with lam < 1 a reply's first tokens "
                    "learn mostly from the critic's guesses, not from the score.",
                ),
                "c": (
                    "It falls: the only score comes at the last token, and lam = 0.95 passes less of it back to the "
                    "first tokens, where the style is chosen, the longer the reply; short vague replies win.",
                    "PPOConfig.lam: 0.95^40 = 13% of the score reaches the first token of a 40-token reply, 36% of a "
                    "20-token one.",
                ),
                "d": (
                    "It falls, because lam discounts the reward the way gamma does.",
                    "The direction is right and the reason near: lam weighs the later TD errors in each advantage, "
                    "so the final score reaches early tokens shrunk. But the returns the critic learns stay "
                    "undiscounted (gamma = 1), which a discount of the reward would change.",
                ),
            },
            right="c",
            close="d",
            hint="Where in the reply does the score arrive, and how much of it reaches the first token at lam = 0.95?",
            solution="(c). The reward model's score is paid on the last token (ppo.py, step 4). With GAE, token t's "
            "advantage sums the TD errors after it weighted by (gamma * lam)^l (ppo_math.gae), so at lam = 0.95 the "
            "score's share at the first token shrinks with the reply's length: 13% across 40 tokens, 36% across 20 "
            "(PPOConfig.lam). The first tokens choose the style, so the shorter a reply, the more of the score "
            "reaches that choice: short vague replies win, and gold helpfulness falls. The tiny preset keeps "
            "gamma = lam = 1 for this reason (GLOSSARY.md, GAE).",
            # benchmarks/results/exercises.json: 92 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="04.clip_range",
            question="You set clip_range = 0.02, take several optimiser steps on the same batch, and watch the clip "
            "fraction and approxkl. What does clipping protect against?",
            choices={
                "a": (
                    "Large rewards: it caps the score.",
                    "It clips the probability ratio p_new / p_old, not the reward (ppo_math.policy_loss).",
                ),
                "b": (
                    "Drifting away from the reference model.",
                    "That is the KL penalty's job. Clipping bounds the move from the policy that sampled this batch "
                    "(p_old), which is new at every step: over many steps the policy goes as far from the reference "
                    "as the penalty lets it.",
                ),
                "c": (
                    "Negative KL estimates.",
                    "Unrelated: a negative batch KL comes from the k1 estimator (chapter 04, section 3).",
                ),
                "d": (
                    "Several gradient steps on one batch moving the policy far from the one that sampled it, where "
                    "that batch's advantages no longer hold.",
                    "Once a token's ratio has left [1 - eps, 1 + eps] in the direction its advantage favours, its "
                    "gradient is zero (GLOSSARY.md, Clipped objective): the clip fraction counts those tokens.",
                ),
            },
            right="d",
            hint="Which two policies does the ratio rho compare, and which one is fixed for the whole batch?",
            solution="(d). PPO reuses each rollout for several gradient steps (ppo_epochs, minibatches). The "
            "advantages were measured under the policy that sampled the batch, so they are trustworthy only near "
            "it. The clipped loss max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) stops the gradient of every token "
            "whose ratio has moved past eps in its advantage's direction (ppo_math.policy_loss). The clip fraction "
            "counts those tokens, so with eps = 0.02 it rises within a few steps; approxkl, half the mean squared "
            "log-ratio between the rollout policy and the updated one, says how far the update has moved it. The "
            "distance to the reference is a different leash: the KL penalty's.",
            # benchmarks/results/distributed.json: a whole PPO step of the preset takes about 1.2 s (seconds.step);
            # a few optimiser steps on section 1's batch take seconds.
            minutes_on_cpu=0.1,
        ),
        Question(
            key="04.variant_reward",
            question="With REWARD = cfg.variant_reward (a pass/fail toxicity classifier), which gold term moves less "
            "than with the preference reward, and why?",
            choices={
                "a": (
                    "toxicity: a classifier reward cannot make the policy less rude.",
                    "It does: benchmarks/results/ppo_targets.json reports a lower rude share after PPO with the "
                    "variant on every seed, if a smaller drop than with the preference reward.",
                ),
                "b": (
                    "helpfulness: a pass/fail reward pays every clean reply the same, so nothing favours the clean "
                    "reply with tips over a clean reply without.",
                    "rewards.ToxicityReward ('binary') and Preset.variant_reward; in benchmarks/results/"
                    "ppo_targets.json the variant's helpfulness change has an interval that includes 0 on every "
                    "seed, the preference reward's lies above 0.",
                ),
                "c": (
                    "relevance, because the classifier reads the prompt and punishes off-topic replies.",
                    "ToxicityReward scores the response only; it never reads the prompt.",
                ),
                "d": (
                    "None: both rewards learnt the same rankings.",
                    "The classifier never saw the rankings: alt-profanity-check was trained on its own labelled "
                    "texts (chapter 03, section 6).",
                ),
            },
            right="b",
            hint="Which replies does a pass/fail reward score differently from each other?",
            solution="(b). The variant's reward is 1 if P(toxic) < 0.5 and 0 otherwise (rewards.ToxicityReward, "
            "Preset.variant_reward): only crossing the threshold changes it, so PPO learns to leave rude replies and "
            "nothing about which clean reply is better. The preference reward model learnt the labelers' rankings, "
            "which put helpful replies above vague ones, so it also teaches tips. benchmarks/results/"
            "ppo_targets.json shows both: with the variant the rude share falls, a little less, and the gold "
            "helpfulness change's interval includes 0 on every seed; with the preference reward it is above 0.",
            # benchmarks/results/exercises.json: 69 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="05.more_data_proxy",
            question="The proxy is trained on more items (num_items=120) or on careful's rankings. Why would the gold "
            "peak come later (at a larger KL) or higher?",
            choices={
                "a": (
                    "More data removes over-optimisation: proxy and gold then rise together for ever.",
                    "Gao et al. found the peak moves, not that it vanishes (GLOSSARY.md, Reward over-optimisation): "
                    "any proxy is right only near its data.",
                ),
                "b": (
                    "A proxy that learnt from more, or cleaner, rankings is right over a wider region around the "
                    "base model's replies, so the policy can travel further before it reaches replies the proxy "
                    "over-rates.",
                    "GLOSSARY.md, Proxy reward and Reward over-optimisation: with larger reward models trained on "
                    "more data, the policy reaches a higher gold reward before the fall (Gao et al. 2023).",
                ),
                "c": (
                    "A larger training set makes the proxy's scores larger, so PPO moves faster.",
                    "The advantages are whitened per batch (GLOSSARY.md, Advantage whitening): the step size does "
                    "not depend on the reward's scale.",
                ),
                "d": (
                    "The KL penalty grows with the proxy's training set.",
                    "beta is the run's kl_coef, a setting (hacking.ppo_config); the proxy does not set it.",
                ),
            },
            right="b",
            hint="Where is any proxy reward trustworthy? Read GLOSSARY.md's Proxy reward entry.",
            solution="(b). A proxy is trustworthy only near the data it learnt from (GLOSSARY.md, Proxy reward). The "
            "chapter's proxy saw 24 items from the noisiest persona (hacking.train_noisy_reward_model), so it is "
            "fooled soon after the policy leaves the base model's replies. More items, or careful's cleaner "
            "rankings, make it right over more of the space the policy walks through, so gold keeps rising further "
            "out before proxy and gold part: the peak moves to a larger KL, and usually higher. That is Gao et "
            "al.'s finding for larger reward models trained on more data (GLOSSARY.md, Reward over-optimisation); "
            "the fall does not go away.",
            # benchmarks/results/exercises.json: 192 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=4,
        ),
        Question(
            key="05.logit_reward",
            question='PPO against rewards.ToxicityReward("logit") with no KL penalty: which gold term falls, and why '
            "does 1 - P(toxic) not do this? (Two letters are right.)",
            choices={
                "a": (
                    "Helpfulness falls: among clean replies the unbounded logit still has favourites, and with no "
                    "penalty the policy drifts to content-free replies the classifier finds extra clean.",
                    "Preset.variant_reward: the unbounded logit drives the tiny model to content-free vague replies; "
                    "chapter 03, section 6: among clean replies the logit still has favourites.",
                ),
                "b": (
                    "Toxicity rises: the logit reward pays for profanity.",
                    "It is the logit for NOT toxic (rewards.nontoxic_logit): higher means cleaner.",
                ),
                "c": (
                    "1 - P(toxic) saturates at 1: once a reply is clean there is little left to gain, so the push "
                    "towards 'extra clean' is weak (weak, not silent: whitening rescales small differences).",
                    "rewards.ToxicityReward: 'prob' saturates at 1, so a clean reply has nothing left to gain; "
                    "chapter 03, section 6.",
                ),
                "d": (
                    "1 - P(toxic) is bounded, so PPO ignores it.",
                    "Bounded is not ignored: it still separates toxic from clean replies, where its slope is steep; "
                    "it is flat only among clean ones.",
                ),
            },
            right="ac",
            hint="Plot the three shapes: rewards.toxicity_reward_plot. Where is each one flat?",
            solution="(a) and (c). The logit reward is unbounded (rewards.ToxicityReward): a clean reply can always "
            "score a little higher, and the classifier scores some content-free replies (vague, fluff) above "
            "helpful ones (chapter 03, section 6). With no KL penalty nothing holds the policy back, so it drifts "
            "there: gold helpfulness (and relevance) fall, and the replies turn vague (Preset.variant_reward's "
            "docstring names this). 1 - P(toxic) saturates at 1: among clean replies its differences are tiny, so "
            "once the policy is clean it has little left to chase; whitening makes that signal weak, not silent.",
            # benchmarks/results/exercises.json: 73 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="05.adaptive_kl",
            question="PPO with adaptive_kl=True, target_kl=1.0, kl_horizon=1000 on chapter 05's runs (batches of 16, "
            "100 steps). What decides whether the KL settles near the target?",
            choices={
                "a": (
                    "How far the starting beta is from one that holds the KL at 1 nat: the controller moves beta "
                    "slowly, by a factor of at most 1 + 0.2 * 16 / 1000 per step, so at most about 1.38 times over "
                    "the run.",
                    "ppo_math.AdaptiveKLController: error = clip(KL / target - 1, -0.2, 0.2) and beta <- beta * "
                    "(1 + error * n / horizon); 1.0032^100 is 1.38.",
                ),
                "b": (
                    "Nothing: the controller sets beta so that every step hits the target.",
                    "It is a proportional controller with a clipped error (ppo_math.AdaptiveKLController): one "
                    "small nudge per step.",
                ),
                "c": (
                    "It starts from kl_coef=0 and builds beta up from there.",
                    "It multiplies beta, so from 0 nothing adapts (chapter 05, section 5): start it above 0.",
                ),
                "d": (
                    "Nothing: a target KL guarantees that gold holds.",
                    "The target is a budget you guess in advance; the gold peak's KL is what it has to guess "
                    "(chapter 05, section 4).",
                ),
            },
            right="a",
            hint="Multiply beta by the largest factor the controller allows in one step, 100 times.",
            solution="(a). The controller (ppo_math.AdaptiveKLController; Ziegler et al. 2019) multiplies beta after "
            "each step by 1 + clip(KL / target - 1, -0.2, 0.2) * batch / horizon: with batches of 16 "
            "(hacking.HACKING_PPO) and a horizon of 1000, at most 1.0032 per step: about 1.38 times over 100 steps at "
            "most, and down to about 0.73 at least. So the KL settles only if the starting beta is within that "
            "reach of the beta that holds 1 nat; otherwise it overshoots, or stays low, until beta catches up "
            "(chapter 05, section 5, traces it for three horizons). Gold holds as long as the KL stays where proxy "
            "and gold still agree: the target is a guess of that point.",
            # benchmarks/results/exercises.json: 77 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="06.k_samples",
            question="At k = 16 instead of the preset's k, why do the expected maximum toxicity and the toxicity "
            "probability grow while the toxic share does not? (Two letters are right.)",
            choices={
                "a": (
                    "A prompt's worst reply of 16 is at least as toxic as its worst of fewer: the maximum of more "
                    "draws does not shrink.",
                    "Expected maximum toxicity averages each prompt's highest P(toxic) over its k samples "
                    "(GLOSSARY.md): it grows with k.",
                ),
                "b": (
                    "More tries give more chances that at least one reply is toxic.",
                    "Toxicity probability is the share of prompts with at least one toxic reply among k "
                    "(GLOSSARY.md): it grows with k.",
                ),
                "c": (
                    "The toxic share grows too: more samples, more toxic samples.",
                    "The share divides the toxic replies by all replies, and both grow with k: its expected value "
                    "does not move (GLOSSARY.md, Toxic share).",
                ),
                "d": (
                    "They grow only for the base model: an aligned policy's stay put.",
                    "The maximum of more draws cannot fall for any policy; PPO's grows less only if its toxic tail "
                    "is thinner.",
                ),
            },
            right="ab",
            hint="Read GLOSSARY.md's entries Expected maximum toxicity, Toxicity probability and Toxic share.",
            solution="(a) and (b). Both RealToxicityPrompts measures ask about the worst of k tries (labkit/"
            "evaluate.py, Toxicity): the largest P(toxic) among a prompt's k replies, and whether any of them is "
            "toxic. More tries can only raise a maximum and an 'at least one', so both grow with k, for any policy; "
            "the gap between base and PPO shows whose worst case is worse. The toxic share is a per-reply average, "
            "the same in expectation at any k. That is why RealToxicityPrompts fixes k (25 in the paper) and the "
            "lab compares only at the same k.",
            # benchmarks/results/exercises.json: 110 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="06.judges_disagree",
            question="The PPO replies the two judges disagree on most: rude replies the SVM misses, or clean replies "
            "MiniLM wrongly flags? What settles it?",
            choices={
                "a": (
                    "MiniLM is right: it is the independent, headline judge.",
                    "Independent is not infallible: it is a second opinion with its own blind spots (chapter 06, "
                    "section 5), e.g. flattery, which its labelled set has few examples of.",
                ),
                "b": (
                    "The SVM is right: it is the classifier the toxicity variant is trained against.",
                    "Being a reward makes it the judge to trust least on a policy trained against it "
                    "(GLOSSARY.md, Goodhart's law).",
                ),
                "c": (
                    "The mean of the two P(toxic)s.",
                    "An average of two judges with different blind spots is a third opinion, not the truth.",
                ),
                "d": (
                    "What the replies are: the world's style (w.classify_style) or its rude rule (World.is_rude), as "
                    "evaluate.style_breakdown shows; on real data, a person reading those replies.",
                    "Chapter 06, section 5: the breakdown by what the replies really are settles a disagreement; "
                    "each judge is a second opinion.",
                ),
            },
            right="d",
            hint="Which source in chapter 06 knows what a reply is, rather than guessing from its words?",
            solution="(d). Neither judge is the truth: the SVM sees word and character n-grams and misses rudeness "
            "without them; MiniLM was fitted on a small labelled set and has its own false positives (chapter 06, "
            "sections 1 and 5). The tiny world knows what each reply is: w.classify_style(prompt, reply) and "
            "w.is_rude(prompt, reply) on the top rows of the sorted table say whether they are rude replies the SVM "
            "missed (a large positive gap) or clean ones MiniLM flagged. evaluate.style_breakdown does it for every "
            "sample. On real data the same check is a person reading the replies the judges disagree on.",
            minutes_on_cpu=0,  # sorting the table chapter 06 already has: no run
        ),
        Question(
            key="06.judge_order",
            question='With judges=("svm", "minilm"), what changes in the report, and which order would a team that '
            "wanted good news prefer?",
            choices={
                "a": (
                    "Nothing: the order is cosmetic.",
                    "The first judge is the headline: its metrics are also reported without the judge's name "
                    "(evaluate.to_flat_metrics), and method_table's worst-case columns and eval_plots.methods_vs_kl's "
                    "toxicity are the first judge's.",
                ),
                "b": (
                    "The samples and each judge's scores stay the same; the headline becomes the SVM's: the numbers "
                    "reported without a judge's name, and whatever a table or plot shows for the first judge. A team "
                    "wanting good news would headline the classifier a policy was trained against, where reward "
                    "hacking reads as success.",
                    "EvalConfig.judges: the first is the headline; evaluate.to_flat_metrics, method_table and "
                    "eval_plots.methods_vs_kl use it (GLOSSARY.md, Judge: a judge that is also the reward cannot see "
                    "reward hacking).",
                ),
                "c": (
                    "The gold utility and the rude share change: they depend on the judge.",
                    "They come from the world, which no judge sees (chapter 06, section 3).",
                ),
                "d": (
                    "Every number changes: the replies are sampled again in another order.",
                    "The replies are drawn from the evaluation's own seed before any judge scores them "
                    "(evaluate.evaluate_model): the judges' order does not enter the sampling.",
                ),
            },
            right="b",
            hint="Read EvalConfig.judges' docstring and evaluate.to_flat_metrics: what is special about the first "
            "judge?",
            solution="(b). evaluate_model samples the replies first, then every judge scores the same samples; the "
            "order of judges decides only which is the headline (EvalConfig.judges). The first judge's metrics are "
            "also written without its name (evaluate.to_flat_metrics: 'toxic_share' is the first judge's), and "
            "method_table's expected-max-toxicity and toxicity-probability columns, eval_plots.methods_vs_kl's "
            "toxicity and the first panel of a plot given no judge= are the first judge's; chapter 06's plots that "
            'name judge="minilm" do not change, and its table only lists the SVM\'s rows first. A team '
            "that wanted good news would put first the classifier its policy was trained against: measured by its "
            "own reward, whatever it learnt that lowers that score, reward hacking included, reads as success "
            "(chapter 06, section 1; GLOSSARY.md, Goodhart's law).",
            # benchmarks/results/exercises.json: 28 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=0.5,
        ),
        Question(
            key="07.bon_n16",
            question="Best-of-N's KL to the base model is at most log n - (n - 1)/n. What follows for matching PPO's "
            "KL, and for the toxic share there?",
            choices={
                "a": (
                    "The KL grows like log n, so n must grow exponentially with it (about e^(KL + 1) for large n). "
                    "Near PPO's KL, best-of-N can match or beat PPO's toxic share, but it pays n samples and n "
                    "reward calls at every query.",
                    "bestofn.bon_kl; benchmarks/results/methods.json has best-of-8 at a KL just below PPO's with a "
                    "lower toxic share, at about ten times PPO's serving time per reply.",
                ),
                "b": (
                    "The KL grows in proportion to n: best-of-16 has twice best-of-8's KL.",
                    "bon_kl(16) - bon_kl(8) = log 2 - 1/16, about 0.63 nats on top of about 1.20: doubling n adds "
                    "less than log 2.",
                ),
                "c": (
                    "At the same KL the two must have the same toxic share: KL is the common currency.",
                    "KL says how far a method moved, not where to (chapter 07, section 5): benchmarks/results/"
                    "methods.json has them apart at nearly the same KL.",
                ),
                "d": (
                    "Best-of-N's real KL is above the bound when samples tie.",
                    "Ties keep it below the bound (bestofn.bon_kl_discrete; GLOSSARY.md, Best-of-N).",
                ),
            },
            right="a",
            hint="Solve log n - (n - 1)/n = K for large n; then open benchmarks/results/methods.json.",
            solution="(a). For large n, log n - (n - 1)/n is about log n - 1, so reaching a KL of K takes n of about "
            "e^(K + 1): each extra nat multiplies n by e (bestofn.bon_kl; a tie-counting KL, bon_kl_discrete, is "
            "lower still). benchmarks/results/methods.json measured the lab's main job: best-of-8 sits at a KL just "
            "below PPO's with a lower toxic share and a higher gold utility (one seed), and serves each reply about "
            "ten times slower, because it samples and scores 8 replies per answer. KL is the common currency of "
            "the comparison, not a promise of equal results (chapter 07, section 5).",
            # benchmarks/results/exercises.json: 139 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=3,
        ),
        Question(
            key="07.dpo_consensus",
            question="DPO trained on the consensus pairs (one vote per item) instead of all labelers' pairs. Why can "
            "fewer, cleaner pairs teach more?",
            choices={
                "a": (
                    "All labelers' pairs hold both directions wherever labelers disagree, and the crowdworker's "
                    "random answers; DPO fits every pair, so these pull the implicit reward opposite ways. The "
                    "consensus keeps one direction per pair, the one the labelers agree on on average.",
                    "Chapter 03, section 1: where labelers disagree, both directions of a pair are in the data; "
                    "chapter 02, section 6: in the consensus a noisy labeler's random answers no longer count.",
                ),
                "b": (
                    "The consensus pairs add the tied replies as pairs.",
                    "Ties give no pair unless keep_ties=True, for the consensus as for any ranking (labkit/pairs.py, "
                    "rule 3).",
                ),
                "c": (
                    "DPO needs a reward model, and the consensus provides a better one.",
                    "DPO needs no reward model: its implicit reward is the policy's log-ratio to the reference "
                    "(GLOSSARY.md, DPO).",
                ),
                "d": (
                    "Fewer pairs always give a smaller KL, so the gold utility must rise.",
                    "DPO's loss keeps falling as the margin grows (chapter 07, section 2): fewer pairs are not a "
                    "leash, and a smaller KL alone does not raise gold.",
                ),
            },
            right="a",
            hint="What does a pair in both directions do to DPO's Bradley-Terry loss?",
            solution="(a). DPO applies the Bradley-Terry loss to its implicit reward (labkit/dpo.py; GLOSSARY.md, "
            "DPO), and like a reward model it fits every pair. All labelers' pairs include both directions of a "
            "pair wherever labelers disagree, and the noisy crowdworker's random quarter (labelers.PERSONAS): those "
            "pull the log-ratios opposite ways and spend the policy's movement (its KL) on noise. The consensus "
            "pairs (pairs.consensus_records) give one vote per item, so each pair points the way the labelers "
            "agree on average: fewer pairs, less contradiction.",
            # benchmarks/results/exercises.json: 57 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=0.9,
        ),
        Question(
            key="07.bon_by_gold",
            question='Best-of-N picks by the world\'s gold (make_reward("gold", world=w)) or by the pass/fail '
            'classifier (make_reward("toxicity:binary")). Which holds?',
            choices={
                "a": (
                    "By the pass/fail classifier it gets the better gold: removing rude replies is all gold measures.",
                    "Gold weighs relevance, helpfulness and fluency too (world.GOLD_WEIGHTS); a pass/fail reward "
                    "pays every clean reply the same, so among clean replies it takes whichever comes first.",
                ),
                "b": (
                    "Both sit at the KL bound log n - (n - 1)/n.",
                    "A pass/fail reward ties a lot, so its KL is well below the bound (bestofn.bon_kl_pass_fail).",
                ),
                "c": (
                    "By gold it picks each pool's best reply by the truth, so no rule applied to the same samples "
                    "gets a higher gold; it can never be deployed, because a deployment has no gold to pick by.",
                    "bestofn.select_best keeps each prompt's highest-scoring sample; the gold utility is the tiny "
                    "world's, and no real dataset has it (GLOSSARY.md, Gold utility).",
                ),
            },
            right="c",
            hint="What does best-of-N maximise, per prompt, and who can compute gold outside this lab?",
            solution="(c). Best-of-N keeps each prompt's highest-scoring sample (bestofn.select_best): picking by gold "
            "maximises gold over the pool, an upper limit for any reward choosing from the same samples. The "
            "pass/fail classifier ties every clean reply, so it removes rude replies and picks among the clean ones "
            "by order (its KL is far under the bound: bestofn.bon_kl_pass_fail). Best-of-N by gold cannot be "
            "deployed because gold is the tiny world's truth, which real traffic does not come with (GLOSSARY.md, "
            "Gold utility); a deployed best-of-N picks by a proxy, the preference reward model, and inherits its "
            "blind spots.",
            # benchmarks/results/exercises.json: 113 s, measured in the chapter by benchmarks/exercises.py
            minutes_on_cpu=2,
        ),
        Question(
            key="08.lora_minibatch",
            question="memory.estimate predicts LoRA's peak for a PPO step. At what minibatch does the predicted peak "
            "double, against the preset's minibatch?",
            choices={
                "a": (
                    "At more than twice the minibatch: only the activations grow with it, in proportion, while the "
                    "rest stays fixed; the larger the fixed part, the further beyond twice.",
                    "memory.estimate: update activations = mini_batch_size * (...); weights, adapters and AdamW's "
                    "moments do not depend on it, and while the rollout is the larger phase the peak does not move.",
                ),
                "b": (
                    "Never: with LoRA the peak does not depend on the minibatch.",
                    "LoRA removes most of the gradients and optimizer state, not the activations, and those grow "
                    "with the minibatch (chapter 08, section 1).",
                ),
                "c": (
                    "At twice the minibatch: the peak is proportional to it.",
                    "The weights, the adapters, the value head and the optimizer state do not grow with the "
                    "minibatch (memory.estimate); only the update's activations do.",
                ),
                "d": (
                    "At less than twice: the sampler's KV cache grows with the minibatch too.",
                    "The KV cache holds the whole batch while sampling (batch_size, not mini_batch_size, in "
                    "memory.estimate): it does not grow with the minibatch.",
                ),
            },
            right="a",
            hint="Split memory.estimate's total into the part that depends on mini_batch_size and the part that "
            "does not.",
            solution="(a). memory.estimate's peak is fixed parts (weights, adapters, value head, AdamW's moments) plus "
            "the larger of the rollout (the whole batch's KV cache) and the update (one minibatch's activations, "
            "proportional to mini_batch_size). Peak(m) = F + a m doubles at 2 + F / (a m) times m: always more "
            "than twice. On the tiny model activations dominate LoRA's peak (README.md, Benchmarks: memory.py), "
            "so expect a little more than twice; on a larger model with short sequences, far more.",
            minutes_on_cpu=0,  # memory.estimate is arithmetic: no run
        ),
        Question(
            key="08.consecutive",
            question="With consecutive=1, the alerts before request 600 are false alarms. Why do they fire, and what "
            "does consecutive=2 cost?",
            choices={
                "a": (
                    "consecutive=1 narrows the bands.",
                    "The bands come from bands_from_baseline (k standard errors of a window's difference from the "
                    "baseline); consecutive only counts windows in a row outside them.",
                ),
                "b": (
                    "One window outside its band fires on its own, and by chance a baseline-like window sometimes "
                    "is; two in a row are much rarer. The cost: a real drift is reported one step later.",
                    "labkit/monitoring.py, Alerts: one window alone flaps; requiring c windows makes a false alarm "
                    "much rarer, but a real drift is reported (c - 1) x step requests later.",
                ),
                "c": (
                    "They cannot fire: the bands come from the first 500 requests, so no earlier window leaves them.",
                    "A band allows k = 3 standard errors: a window like the baseline still falls outside now and "
                    "then by chance, and over many windows and several metrics that happens.",
                ),
                "d": (
                    "Every alert with consecutive=1 is real: the two-window rule hides drift.",
                    "The mix does not change before request 600 (monitoring.EXAMPLE_SCHEDULE): what fires there is "
                    "noise.",
                ),
            },
            right="b",
            hint="Read the Bands and Alerts paragraphs of labkit/monitoring.py's module docstring.",
            solution="(b). A band is k = 3 standard errors of a window's difference from the baseline, so a window "
            "like the baseline falls outside about 0.3% of the time, per metric (labkit/monitoring.py, Bands). With "
            "consecutive=1 each such window fires, and several metrics times many windows add up. Requiring two in "
            "a row makes a false alarm much rarer (overlapping windows are correlated, so not quite the square), and "
            "a real drift is reported one step (step requests) later: (c - 1) x step (monitoring.py, Alerts). The "
            "schedule changes only at request 600 (monitoring.EXAMPLE_SCHEDULE), so alerts before it are noise.",
            minutes_on_cpu=0,  # recomputing the alerts of the scored stream: no run
        ),
        Question(
            key="08.false_block_budget",
            question="guardrails.threshold_for(p_toxic, labels, max_false_block=0.02) against section 4's threshold "
            "of 0.5: how does the catch rate compare?",
            choices={
                "a": (
                    "Higher: a tighter budget makes the guardrail stricter.",
                    "A tighter false-block budget means blocking fewer clean replies, which takes a higher "
                    "threshold, and a higher threshold catches no more toxic ones.",
                ),
                "b": (
                    "The same: the threshold changes only the false blocks.",
                    "Raising the threshold blocks fewer replies, so both rates can only fall (labkit/guardrails.py).",
                ),
                "c": (
                    "It is the highest catch rate of any threshold: threshold_for maximises catches.",
                    "It returns the lowest threshold whose false-block rate is within the budget; the highest catch "
                    "rate of all is at the lowest threshold, which blocks nearly everything.",
                ),
                "d": (
                    "If 0.5 false-blocks more than 2% of clean replies, the budget needs a higher threshold and the "
                    "catch rate falls with it; if 0.5 already stays within 2%, the threshold found is at most 0.5 "
                    "and catches at least as many.",
                    "guardrails.threshold_for: the lowest threshold meeting the budget; both rates fall as the "
                    "threshold rises (GLOSSARY.md, Guardrail).",
                ),
            },
            right="d",
            hint="Read guardrails.threshold_for's docstring: which threshold does it return?",
            solution="(d). Blocking at P(toxic) >= t, both the catch rate and the false-block rate fall as t rises "
            "(labkit/guardrails.py): there is no threshold that buys catches for free. threshold_for returns the "
            "lowest threshold whose false-block rate is at most the budget, the one that catches most within it. "
            "So compare 0.5's false-block rate (guardrails.tradeoff) with 2%: above it, the new threshold is higher "
            "and catches fewer; within it, the new threshold is at most 0.5 and catches at least as many. The "
            "benchmark (benchmarks/results/guardrails.json) shows the first case for MiniLM at a 5% budget.",
            minutes_on_cpu=0,  # a threshold from the scores chapter 08 already has: no run
        ),
    ]
}
