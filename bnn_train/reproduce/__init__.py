"""``bnn reproduce``: re-run the result tables of the paper's §4-5 and set our numbers beside the paper's.

experiments.py  the named experiments (table2 ... table14): grid axes and fixed settings
paper.py        the paper's printed numbers, read from ``bnn_train/paper/tables.csv``
runner.py       plan the runs, train them with ``bnn_train.fit``, append results, resume
report.py       the Markdown table: our mean (std) next to the paper's, and the difference
plots.py        accuracy heatmaps (ours | paper) and Figure-7-style training curves
"""
