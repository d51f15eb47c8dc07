"""TorchServe handler for the digit model: 28x28 grayscale PNG, MNIST normalisation."""

from image_classifier import ImageClassifier


class DigitHandler(ImageClassifier):
    mode = "L"
    size = (28, 28)
    mean = (0.1307,)
    std = (0.3081,)
    log_probabilities = True  # the network ends in log-softmax
