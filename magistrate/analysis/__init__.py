"""What users do with verdicts once `magistrate judge` has written them: report figures,
RewardBench scores, a Bradley-Terry leaderboard, DPO pair selection (docs/analysis.md).

Pure Python over the output's Parquet files (numpy for the leaderboard): no Ray, no vLLM.
"""
