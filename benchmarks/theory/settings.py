"""The settings of every theory experiment: sizes, rates, noise, seeds, steps.

`theory.json` records them next to the numbers they give; `docs/toys.md`
lists the main ones.
"""

# 1. Fig. 3a: the 1×1 problem |c − ab|².
C = 1.0
GD_STARTS = ((0.15, 0.6), (0.6, 0.15), (0.3, 0.3), (2.6, 1.6), (1.6, 2.6), (2.8, 0.9))
GD_RATES = (1e-2, 1e-3)
GD_STEPS, GD_RECORD = 20_000, 100
SGD_START = (2.0, 0.5)  # on the solution set ab = c
SGD_RATE, SGD_NOISE, SGD_STEPS, SGD_RECORD, SGD_SEEDS = 0.02, 0.5, 8000, 50, 64
DELAYS = (0, 1, 2, 4, 8)
# Model 2 (Prop. 6): a* ~ U(0.5, 1.5), b* ~ LogNormal(0, 0.5²), 30 entries.
M2_SIZE, M2_LOG_STD, M2_RATE, M2_SEEDS = 30, 0.5, 0.03, 32

# 2–4. Example 1 in 1-D.
D1, DISTANCE1 = 31, 9
LR1, STEPS1, RECORD1 = 0.03, 8000, 50
NOISE_MAIN = 0.1
STARTS = ("true", "drifted", "random", "small")
NOISES = (0.05, 0.1, 0.2)
RATES = (0.0, 0.03, 0.1, 0.25, 1.0)
RATE_MAIN = 0.25
GRID_SEEDS, MAIN_SEEDS = 8, 32
# Other penalty settings (name, rate, penalty steps per SGD step, include_dc),
# from the truth and random starts at σ = NOISE_MAIN: final = last 2 records.
VARIANTS = (
    ("zero frequency excluded", RATE_MAIN, 1, False),
    ("5 penalty steps per SGD step", 0.2, 5, True),
)
DRIFT_STEPS = STEPS1 // 2  # "drifted": penalty switched on after these steps
FINAL = 0.2  # "final" = mean over the last 20 % of the records
CURVE_STEPS = (0, 500, 1000, 2000, 3950, 4050, 4500, 6000, 8000)
# 2-D (pictures): a (13, 31) grid, the unit-energy 9×9 eye, eye distance 10.
GRID2, DISTANCE2 = (13, 31), 10
LR2, NOISE2, STEPS2, RECORD2, SEEDS2 = 0.02, 0.04, 6000, 1000, 4
SHOW_DISTANCES = (9, 10, 14, 18, 21)
