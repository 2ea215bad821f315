"""Image classification: ImageFolder data, torchvision models and a fast CIFAR recipe, through the engine."""
