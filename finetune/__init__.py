"""Fine-tuning the pretrained encoder into the RVT/YOLOX detector, and its evaluation."""
