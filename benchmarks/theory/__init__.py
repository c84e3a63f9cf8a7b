"""Reproduce the paper's theory on its toy models: Fig. 3a, Fig. 3b, Fig. 2, Sec. 3.4.

Every simulation is a `jax.lax.scan` over steps (`sdr.toys`), batched over
seeds and settings with `jax.vmap`. Settings are the constants of
`settings`; the docs page `docs/toys.md` explains each figure against the
paper.

1. Fig. 3a, the 1×1 Model 2, c = 1 (`sdr.toys.product_sgd`):
   - gradient descent on |c − ab|² from six starts with step 1e-2 and 1e-3
     (small-step GD ≈ gradient flow): the drift of a² − b², which the
     gradient flow conserves (Prop. 8);
   - SGD on |C − ab|², C ~ N(c, σ²), from (2, 0.5) on the solution set,
     64 seeds: the distance to (√c, √c) and a² − b² against steps, and the
     decay rate of a² − b² against the prediction 4η²σ² (each step multiplies
     a² − b² by 1 − 4η²e², e the residual);
   - asynchronous SGD: the same with gradients computed on parameters τ
     steps old (fixed staleness τ = 1, 2, 4, 8; our definition: the paper's
     ASGD is in App. B.9 of its extended version, arXiv:2004.00184);
   - Model 2 with 30 entries (Prop. 6): SGD from the truth drifts to
     A = B = √(A*B*), and the trace ratio ρ' goes from ≈ 1 to
     E[c²]/E[c]² > 1.
2. Fig. 3b, Example 1 in 1-D (d = 31, eye [0.2, 1, 1.5, 1, 0.2], eye
   distance 9; Z a Dirac at the origin, Gaussian noise on X): SGD on the real
   and imaginary parts of the DFT coefficients of k1, k2 from the true
   solution (`sdr.toys.fourier_sgd`), 32 seeds: |k̂1|² and |k̂2|² converge
   towards each other; the SDR of the true solution (closed form, zero
   frequency excluded; 1 with it included) and of the SGD solution.
3. Fig. 2: every group element of S_31 stretches k1 of the SGD solution and
   of the truth; the relative error of the extrapolated image against the
   true stretched image (`sdr.toys.extrapolation_error`), per g and averaged
   over the group; the same in 2-D (13×31 grid, 9×9 eye, SGD with and
   without the penalty) with pictures of the interference artefacts. The
   references: the balanced limit |k̂1| = |k̂2| (`balanced_kernels`) and the
   trivial factorisation k1 = c, k2 = δ.
4. Sec. 3.4: the same SGD interleaved with one gradient step per SGD step on
   the eq. (13) penalty (zero frequency included), over a grid of starts
   (the truth; the truth with the penalty switched on after 4000 plain SGD
   steps; random N(0, 0.3²) kernels; small N(0, 0.01²) kernels), noise
   levels σ ∈ {0.05, 0.1, 0.2} and penalty rates {0, 0.03, 0.1, 0.25, 1}, 8
   seeds each: SDR and extrapolation error over training, the error with the
   learned moduli but the true phases (what genericity, a condition on
   moduli, can act on), the incoherence of the phase of Prop. 2's factor
   λ(ν) = k̂2(ν)/k̂2*(ν) (0 when λ has one sign and no phase, weights
   |k̂2*|²) and the spectral flatness of k2 (1 = white). Two more
   penalty settings from the truth and random starts at σ = 0.1: the zero
   frequency excluded (rate 0.25), and five steps of rate 0.2 per SGD step.

Writes PNG figures and `theory.json` (every reported number, the settings,
this command and the machine it ran on) to `--out`.

    python -m benchmarks.theory --out DIR

Modules: `settings` (the constants), `product` (1), `eye_1d` (2–4 in 1-D),
`eye_2d` (Fig. 2 in 2-D), `eye_common` (what those two share), `figures`,
`summary` (the JSON and the printed headline numbers), `progress` (the stage
display) and `__main__` (the command line).
"""
