"""TorchServe handler for the resnet18-shaped model: 224x224 RGB JPEG, ImageNet normalisation."""

from image_classifier import ImageClassifier


class ResNetHandler(ImageClassifier):
    mode = "RGB"
    size = (224, 224)
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
