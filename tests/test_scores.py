import math

import numpy as np

from geoseg.scores import confusion_matrix, scores


def test_scores_match_a_hand_computed_case():
    reference = np.array([[0, 0, 1], [1, 1, 255]])
    predicted = np.array([[0, 1, 1], [1, 0, 0]])
    cm = confusion_matrix(predicted, reference, 2)
    # reference 0: predicted 0 once, 1 once; reference 1: predicted 1 twice, 0 once; 255 skipped
    assert cm.tolist() == [[1, 1], [1, 2]]
    result = scores(cm, ["a", "b"])
    assert math.isclose(result["per_class"]["a"]["iou"], 1 / 3)
    assert math.isclose(result["per_class"]["b"]["iou"], 2 / 4)
    assert math.isclose(result["per_class"]["b"]["precision"], 2 / 3)
    assert math.isclose(result["per_class"]["b"]["recall"], 2 / 3)
    assert math.isclose(result["per_class"]["a"]["f1"], 2 * 1 / (2 * 1 + 1 + 1))
    assert math.isclose(result["miou"], (1 / 3 + 1 / 2) / 2)
    assert math.isclose(result["overall_accuracy"], 3 / 5)


def test_absent_classes_do_not_count_towards_the_mean():
    result = scores(confusion_matrix(np.array([0, 0]), np.array([0, 0]), 3))
    assert result["miou"] == 1.0 and math.isnan(result["per_class"]["2"]["iou"])
