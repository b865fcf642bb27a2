"""``mhsa-patch ablate``: the controlled experiment (variants x seeds under one recipe) and its report.

One job per file: ``record`` (one finished run as a row of ``ablation.csv``: the contract between the runner and
the report), the runner side (variants, recipe, runs, backends) and the report side (stats, report, plots).
Nothing here imports torch or ultralytics: training and measuring run in children (``mhsa_patch.child``).
"""
