"""Rebuild every table and figure of the field-mark study (issue 28) from its archived runs.

python experiments/summarize_study.py experiments/results/field_study                       # from runs/
python experiments/summarize_study.py experiments/results/field_study --archive multirun/field_study_study_field
"""

from jointcap.analysis.study import main

if __name__ == "__main__":
    main()
