"""Networks of the plug-in metrics (pure PyTorch; weights are supplied by the user, never downloaded).

One file per network: `lpips` (AlexNet / VGG16 + linear heads), `inception` (Inception-v3 for FID),
`iresnet` (ArcFace IResNet-50/100), `syncnet` (SyncNet audio/lip streams). `checkpoint` holds the shared,
strict state-dict loading.
"""
