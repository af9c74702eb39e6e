"""A judge from an installed package (the test of docs/judges.md's entry-point path)."""

from magistrate.judges import FormatTemplate, JudgeProfile, Reading


def read(text: str) -> Reading:
    verdict = "A" if "VERDICT: A" in text else "B" if "VERDICT: B" in text else None
    return Reading(verdict, error=None if verdict else "no VERDICT line")


PROFILE = JudgeProfile(
    name="plugin-test-judge",
    version=3,
    description="a terse judge shipped by a separate package",
    user_template=FormatTemplate("Question: {question}\nA: {answer_a}\nB: {answer_b}\n"
                                 "Which answer is better? Reply [[A]] or [[B]]."),
    read=read,
    default_mode="logprob",
)
