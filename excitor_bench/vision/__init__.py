"""Images and their annotations: COCO Karpathy captions, ScienceQA problems and the CLIP vision tower."""
