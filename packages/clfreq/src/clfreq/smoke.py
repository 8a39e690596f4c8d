"""``python -m clfreq.smoke``: PrePrompt and CLFD-ER on two tiny tasks, in seconds."""

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

    from clfreq.rehearsal import CLFD, ER, split_digits, train_continual

    bench = split_digits(image_size=8)
    bench.train, bench.test = [(x[:80], y[:80]) for x, y in bench.train[:2]], bench.test[:2]
    r = train_continual(CLFD(ER(lr=0.05, buffer_size=20, nf=4)), bench, epochs=3, seed=0)  # CLFD needs >= 3
    if not r["task_il"] > 0.6:
        raise RuntimeError(f"CLFD-ER smoke run is at chance (Task-IL {r['task_il']:.3f})")
    print(f"clfreq smoke OK: CLFD-ER Class-IL {r['class_il']:.3f}, Task-IL {r['task_il']:.3f} on 2 tasks")


if __name__ == "__main__":
    main()
