"""``python -m clfreq.smoke``: PrePrompt on two tiny tasks with the shipped backbone, in seconds."""

from __future__ import annotations


def main() -> None:
    from clfreq.prompt import PrePrompt, PrePromptConfig, load_pretrained_vit, run_stream, split_digits_tasks

    train, test = split_digits_tasks()
    train = [t for t in train[:2]]
    test = test[:2]
    for t in train:
        t.images, t.labels = t.images[:40], t.labels[:40]
    result = run_stream(PrePrompt(load_pretrained_vit(), 10, 2, PrePromptConfig(epochs=1, crct_epochs=3)), train,
                        test)
    if not result.final_accuracy > 0.25:
        raise RuntimeError(f"PrePrompt smoke run is at chance ({result.final_accuracy:.3f})")
    print(f"clfreq smoke OK: PrePrompt final accuracy {result.final_accuracy:.3f} on 2 tasks")


if __name__ == "__main__":
    main()
