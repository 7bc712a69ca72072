"""Evaluation: the paper's protocols (same-identity, cross-identity, audio-driven) and metrics.

`metrics` (offline: L1/PSNR/SSIM, landmark metrics, CSIM-dlib), `plugins` + `nets` (LPIPS, FID, ArcFace CSIM,
SyncNet LSE with user-supplied weights), `protocols` (cases, cached generation, baselines, summaries) and
`cli.eval_main` (the `real3d eval` command).
"""
