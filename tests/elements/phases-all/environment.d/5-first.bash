# Sorted with sort -n before 10-phases-all: its value is overridden there.
export UCL_ENV_ORDER=5
