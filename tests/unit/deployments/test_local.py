"""LocalDeployment: task kinds, progress, outputs, checks, limits, timeouts and cancellation."""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from typing import Any

import anyio
import pytest
from PIL import Image

from ikproxy.deployments import Deployment
from ikproxy.deployments.local import LocalDeployment, TaskFailed, Update, check_cancelled
from ikproxy.errors import InvalidParameter, RunTimeout, WorkflowFailed
from ikproxy.io import BaseIO, ImageIO, TaskIO
from ikproxy.model import Progress, Results, State

pytestmark = pytest.mark.anyio

WAIT = 5  # seconds: a generous bound on every wait, so a broken test fails instead of hanging

PNG = ImageIO.from_pil(Image.new("RGB", (2, 2), "red"))
LABEL = TaskIO("label", {"text": "cat"})


async def collect(stream: AsyncIterator[Progress]) -> list[Progress]:
    return [progress async for progress in stream]


def wait_thread_event(event: threading.Event) -> Any:
    """Await a threading.Event from async code, failing after WAIT seconds."""

    async def wait() -> None:
        assert await anyio.to_thread.run_sync(event.wait, WAIT), "event not set in time"

    return wait()


# -- kinds of task -----------------------------------------------------------------


async def test_async_task_reports_pending_started_success() -> None:
    deployment = LocalDeployment()

    @deployment.task
    async def echo(image: ImageIO) -> ImageIO:
        await anyio.lowlevel.checkpoint()
        return image

    items = await collect(deployment.run_stream(PNG))

    assert [p.state for p in items] == [State.PENDING, State.STARTED, State.SUCCESS]
    run_id = items[0].run_id
    assert run_id is not None
    assert len(run_id) == 32
    assert {(p.run_id, p.uuid, p.name) for p in items} == {(run_id, run_id, "echo")}
    assert [p.results is not None for p in items] == [False, False, True]
    assert items[-1].results == Results((PNG,), uuid=run_id)
    assert (items[-1].fraction, items[-1].eta) == (1.0, (0, 0))
    assert (items[1].fraction, items[1].eta) == (None, (None, None))


async def test_each_run_gets_its_own_run_id() -> None:
    deployment = LocalDeployment({"echo": lambda image: image})

    first = await deployment.run(PNG)
    second = await deployment.run(PNG)

    assert first.uuid != second.uuid


async def test_sync_task_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def where(image: ImageIO) -> ImageIO:
        threads.append(threading.get_ident())
        return image

    results = await LocalDeployment({"where": where}).run(PNG)

    assert results.outputs == (PNG,)
    assert threads
    assert threads[0] != threading.get_ident()


async def test_sync_generator_reports_fractions_and_etas_then_returns_outputs() -> None:
    threads: set[int] = set()

    def steps() -> Generator[float | Update, None, ImageIO]:
        threads.add(threading.get_ident())
        yield Update(fraction=0.25, eta=3000)
        yield Update(fraction=0.5, eta=(1000, 2500))
        yield Update(eta=500.4)
        yield 1
        return PNG

    items = await collect(LocalDeployment({"steps": steps}).run_stream())

    assert [(p.state, p.fraction, p.eta) for p in items[1:]] == [
        (State.STARTED, None, (None, None)),
        (State.STARTED, 0.25, (3000, 3000)),
        (State.STARTED, 0.5, (1000, 2500)),
        (State.STARTED, 0.5, (500, 500)),  # the last fraction is kept
        (State.STARTED, 1.0, (0, 0)),  # estimated: nothing left at 100 %
        (State.SUCCESS, 1.0, (0, 0)),
    ]
    assert items[-1].results is not None
    assert items[-1].results.outputs == (PNG,)
    assert threading.get_ident() not in threads


async def test_async_generator_yields_progress_then_its_outputs() -> None:
    after_output = []
    closed = anyio.Event()

    async def steps() -> AsyncGenerator[object, None]:
        try:
            yield 0.5
            yield Update(fraction=0.75, eta=(None, 900))
            yield [PNG, LABEL]
            after_output.append(True)
        finally:
            closed.set()

    items = await collect(LocalDeployment({"steps": steps}).run_stream())

    assert [(p.state, p.fraction) for p in items] == [
        (State.PENDING, None),
        (State.STARTED, None),
        (State.STARTED, 0.5),
        (State.STARTED, 0.75),
        (State.SUCCESS, 1.0),
    ]
    assert items[3].eta == (None, 900)
    assert items[-1].results is not None
    assert items[-1].results.outputs == (PNG, LABEL)
    assert closed.is_set()
    assert after_output == []


async def test_sync_generator_may_also_yield_its_outputs() -> None:
    after_output = []
    closed = threading.Event()

    def steps() -> Generator[object, None, None]:
        try:
            yield 0.5
            yield PNG
            after_output.append(True)
        finally:
            closed.set()

    results = await LocalDeployment({"steps": steps}).run()

    assert results.outputs == (PNG,)
    assert closed.is_set()
    assert after_output == []


async def test_async_generator_without_outputs_succeeds_with_none() -> None:
    async def nothing() -> AsyncGenerator[float, None]:
        yield 0.5

    results = await LocalDeployment({"nothing": nothing}).run()

    assert results.outputs == ()


async def test_callable_objects_partials_and_wrapped_generators_are_recognised() -> None:
    class AsyncCallable:
        async def __call__(self, *, word: str) -> dict[str, Any]:
            await anyio.lowlevel.checkpoint()
            return {"word": word}

    async def tagged(tag: str, *, word: str) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {tag: word}

    def steps() -> Generator[float, None, dict[str, Any]]:
        yield 0.5
        return {"steps": "done"}

    @functools.wraps(steps)
    def wrapped() -> Generator[float, None, dict[str, Any]]:  # a plain def returning a generator
        return steps()

    deployment = LocalDeployment(
        {"object": AsyncCallable(), "partial": functools.partial(tagged, "p"), "wrapped": wrapped}
    )

    object_results = await deployment.run(task="object", parameters={"word": "a"})
    partial_results = await deployment.run(task="partial", parameters={"word": "b"})
    wrapped_items = await collect(deployment.run_stream(task="wrapped"))

    assert object_results.outputs == (TaskIO("word", "a"),)
    assert partial_results.outputs == (TaskIO("p", "b"),)
    assert [p.fraction for p in wrapped_items] == [None, None, 0.5, 1.0]
    assert wrapped_items[-1].results is not None
    assert wrapped_items[-1].results.outputs == (TaskIO("steps", "done"),)


# -- ETA estimate ------------------------------------------------------------------


async def test_eta_is_estimated_from_elapsed_time_and_fraction() -> None:
    async def steps() -> AsyncGenerator[object, None]:
        yield 0.25
        yield Update()  # no news: the estimate is made again from the last fraction
        yield PNG

    stream = LocalDeployment({"steps": steps}).run_stream()
    await stream.__anext__()  # PENDING
    before_start = anyio.current_time()
    await stream.__anext__()  # STARTED: the task's clock starts before this is yielded
    after_start = anyio.current_time()
    await anyio.sleep(0.05)  # let time pass, so that there is something to estimate from
    update = await stream.__anext__()
    after_update = anyio.current_time()
    await stream.aclose()

    assert update.fraction == 0.25
    lower, upper = update.eta
    assert lower == upper
    assert lower is not None
    # eta = elapsed * (1 - f) / f = 3 * elapsed, with elapsed within known bounds.
    assert 3 * (after_update - after_start - 0.05) * 1000 - 1 <= lower
    assert 3 * 50 - 1 <= lower <= 3 * (after_update - before_start) * 1000 + 1


async def test_eta_is_unknown_until_there_is_a_fraction() -> None:
    async def steps() -> AsyncGenerator[object, None]:
        yield Update()
        yield 0.0
        yield PNG

    items = await collect(LocalDeployment({"steps": steps}).run_stream())

    assert [(p.fraction, p.eta) for p in items[2:4]] == [(None, (None, None)), (0.0, (None, None))]


# -- outputs -----------------------------------------------------------------------


async def outputs_of(value: object) -> tuple[BaseIO, ...]:
    async def produce() -> object:
        await anyio.lowlevel.checkpoint()
        return value

    return (await LocalDeployment({"produce": produce}).run()).outputs


async def test_outputs_are_normalised() -> None:
    raw = PNG.to_bytes()

    assert await outputs_of(PNG) == (PNG,)
    assert await outputs_of(LABEL) == (LABEL,)
    assert await outputs_of(raw) == (ImageIO.from_bytes(raw),)
    assert await outputs_of(bytearray(raw)) == (ImageIO.from_bytes(raw),)
    assert await outputs_of({"label": {"text": "cat"}}) == (LABEL,)
    assert await outputs_of({"image": PNG.to_base64()}) == (PNG,)
    assert await outputs_of(Results((PNG, LABEL))) == (PNG, LABEL)
    assert await outputs_of([PNG, raw, Results((LABEL,))]) == (PNG, PNG, LABEL)
    assert await outputs_of((LABEL, {"n": 1})) == (LABEL, TaskIO("n", 1))
    assert await outputs_of(None) == ()
    assert await outputs_of([]) == ()


async def test_pil_outputs_are_encoded_as_png() -> None:
    rgb = Image.new("RGB", (3, 2), (10, 20, 30))
    jpeg = Image.open(io.BytesIO(ImageIO.from_pil(rgb, format="JPEG").to_bytes()))
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))

    (from_rgb,) = await outputs_of(rgb)
    (from_jpeg,) = await outputs_of(jpeg)
    (from_cmyk,) = await outputs_of(cmyk)

    for output in (from_rgb, from_jpeg, from_cmyk):
        assert isinstance(output, ImageIO)
        assert output.format == "PNG"
    assert isinstance(from_rgb, ImageIO)
    assert from_rgb.to_pil().getpixel((2, 1)) == (10, 20, 30)
    assert isinstance(from_cmyk, ImageIO)
    assert from_cmyk.to_pil().getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            42,
            "a task output of type int is not supported: return a BaseIO, a PIL image, "
            "image bytes, a one-key dict, a Results, or a list of them",
        ),
        (
            [PNG, "text"],
            "a task output of type str is not supported: return a BaseIO, a PIL image, "
            "image bytes, a one-key dict, a Results, or a list of them",
        ),
        (
            {"a": 1, "b": 2},
            "an input or output must be a JSON object with exactly one key (its kind)",
        ),
    ],
)
async def test_unsupported_outputs_fail_the_run(value: object, message: str) -> None:
    with pytest.raises(TaskFailed) as caught:
        await outputs_of(value)

    assert str(caught.value) == f"task 'produce' failed: {type(caught.value.__cause__).__name__}"
    assert isinstance(caught.value.__cause__, (TypeError, ValueError))
    assert str(caught.value.__cause__) == message


# -- checks before the run is accepted --------------------------------------------


def checked_deployment() -> LocalDeployment:
    deployment = LocalDeployment(name="checks")

    @deployment.task
    def edges(image: ImageIO, *, strength: float = 1.0, mode: str = "sobel") -> ImageIO:
        return image

    @deployment.task("generate")
    def make(*, prompt: str, size: int = 512) -> None:
        return None

    @deployment.task
    def blend(first: ImageIO, second: ImageIO | None = None) -> None:
        return None

    @deployment.task
    def merge(first: ImageIO, *rest: ImageIO, **options: Any) -> None:
        return None

    return deployment


async def refusal(deployment: LocalDeployment, *inputs: Any, **kwargs: Any) -> str:
    """The message of the `InvalidParameter` the first `__anext__()` raises."""
    stream = deployment.run_stream(*inputs, **kwargs)
    with pytest.raises(InvalidParameter) as caught:
        await stream.__anext__()
    return str(caught.value)


async def test_the_default_task_is_the_first_registered() -> None:
    deployment = checked_deployment()

    assert deployment.task_names == ("edges", "generate", "blend", "merge")
    assert (await deployment.run(PNG)).outputs == (PNG,)


async def test_unknown_task_lists_the_valid_ones() -> None:
    deployment = checked_deployment()

    assert await refusal(deployment, task="nope") == (
        "unknown task 'nope'; valid tasks: blend, edges, generate, merge"
    )
    assert await refusal(LocalDeployment(name="empty")) == "deployment 'empty' has no tasks"


async def test_unknown_parameters_list_the_valid_ones_sorted() -> None:
    deployment = checked_deployment()

    assert await refusal(deployment, PNG, parameters={"sigma": 1}) == (
        "unknown parameter 'sigma' for task 'edges'; valid parameters: mode, strength"
    )
    assert await refusal(deployment, PNG, parameters={"b": 1, "a": 2, "mode": "x"}) == (
        "unknown parameters 'a', 'b' for task 'edges'; valid parameters: mode, strength"
    )
    assert await refusal(deployment, PNG, task="blend", parameters={"x": 1}) == (
        "unknown parameter 'x' for task 'blend'; valid parameters: none"
    )


async def test_a_positional_parameter_is_an_input_not_a_run_parameter() -> None:
    assert await refusal(checked_deployment(), PNG, task="blend", parameters={"second": 1}) == (
        "unknown parameter 'second' for task 'blend'; valid parameters: none"
    )


async def test_long_or_many_unknown_names_are_shortened() -> None:
    parameters = {"x" * 1000: 1, **{f"p{i}": i for i in range(9)}}

    assert await refusal(checked_deployment(), PNG, parameters=parameters) == (
        "unknown parameters 'p0', 'p1', 'p2', 'p3', 'p4' and 5 more for task 'edges'; "
        "valid parameters: mode, strength"
    )
    assert await refusal(checked_deployment(), task="y" * 1000) == (
        f"unknown task '{'y' * 37}...'; valid tasks: blend, edges, generate, merge"
    )
    assert await refusal(checked_deployment(), PNG, parameters={1: "a"}) == (
        "parameter names must be strings"
    )


async def test_missing_required_parameters() -> None:
    assert await refusal(checked_deployment(), task="generate") == (
        "task 'generate' is missing required parameter 'prompt'"
    )

    async def two(*, b: int, a: int) -> None:
        await anyio.lowlevel.checkpoint()

    assert await refusal(LocalDeployment({"two": two})) == (
        "task 'two' is missing required parameters 'a', 'b'"
    )


async def test_wrong_number_of_inputs_says_how_many_the_task_takes() -> None:
    deployment = checked_deployment()

    assert await refusal(deployment) == "task 'edges' takes 1 input, got 0"
    assert await refusal(deployment, PNG, PNG) == "task 'edges' takes 1 input, got 2"
    assert await refusal(deployment, PNG, task="generate", parameters={"prompt": "a"}) == (
        "task 'generate' takes no inputs, got 1"
    )
    assert await refusal(deployment, PNG, PNG, PNG, task="blend") == (
        "task 'blend' takes 1 to 2 inputs, got 3"
    )
    assert await refusal(deployment, task="merge") == "task 'merge' takes at least 1 input, got 0"

    async def pair(first: ImageIO, second: ImageIO) -> None:
        await anyio.lowlevel.checkpoint()

    assert await refusal(LocalDeployment({"pair": pair}), PNG) == (
        "task 'pair' takes 2 inputs, got 1"
    )


async def test_varargs_and_kwargs_accept_any_inputs_and_parameters() -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    def merge(first: ImageIO, *rest: ImageIO, **options: Any) -> None:
        seen.append((1 + len(rest), options))

    await LocalDeployment({"merge": merge}).run(PNG, PNG, PNG, parameters={"any": 1, "x": "y"})

    assert seen == [(3, {"any": 1, "x": "y"})]


async def test_inputs_arrive_typed_and_parameters_as_keywords() -> None:
    seen: list[tuple[Any, ...]] = []

    def task(first: BaseIO, second: BaseIO, *, level: int) -> None:
        seen.append((first, second, level))

    await LocalDeployment({"task": task}).run(
        PNG.to_bytes(), {"label": {"text": "cat"}}, parameters={"level": 3}
    )

    assert seen == [(PNG, LABEL, 3)]


async def test_validate_refuses_before_any_progress() -> None:
    entered = []

    def validate(*, size: int) -> None:
        if size > 10:
            raise InvalidParameter(f"size must be at most 10, not {size}")

    def task(*, size: int) -> None:
        entered.append(size)

    deployment = LocalDeployment()
    deployment.add_task(task, validate=validate)

    assert await refusal(deployment, parameters={"size": 11}) == "size must be at most 10, not 11"
    assert entered == []
    await deployment.run(parameters={"size": 10})
    assert entered == [10]


async def test_a_validator_that_crashes_fails_the_run_safely() -> None:
    def validate() -> None:
        raise OSError("/secret/path not found")

    deployment = LocalDeployment()
    deployment.add_task(lambda: None, "task", validate=validate)
    stream = deployment.run_stream()

    with pytest.raises(TaskFailed, match=r"^task 'task' failed: OSError$"):
        await stream.__anext__()


def test_registration_errors() -> None:
    deployment = LocalDeployment({"a": lambda: None})

    with pytest.raises(ValueError, match=r"^task 'a' is already registered$"):
        deployment.add_task(lambda: None, "a")
    with pytest.raises(ValueError, match=r"^a task name must be a non-empty string$"):
        deployment.add_task(lambda: None, "")
    with pytest.raises(TypeError, match=r"^a task must be callable, not int$"):
        deployment.add_task(3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^max_concurrency must be an integer >= 1 or None, not 0$"
    ):
        LocalDeployment(max_concurrency=0)
    with pytest.raises(
        ValueError, match=r"^timeout must be a number of seconds > 0 or None, not -1$"
    ):
        LocalDeployment(timeout=-1)


async def test_a_bad_run_timeout_is_refused() -> None:
    stream = LocalDeployment({"a": lambda: None}).run_stream(timeout=0)

    with pytest.raises(
        ValueError, match=r"^timeout must be a number of seconds > 0 or None, not 0$"
    ):
        await stream.__anext__()


def test_local_deployment_is_a_deployment() -> None:
    assert isinstance(LocalDeployment(), Deployment)
    assert (
        repr(LocalDeployment({"a": lambda: None}, name="x")) == "<LocalDeployment 'x' tasks=['a']>"
    )


# -- failures ----------------------------------------------------------------------


async def test_task_exception_fails_safely_and_keeps_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = KeyError("token=sk-secret")

    def boom() -> None:
        raise error

    with (
        caplog.at_level(logging.ERROR, logger="ikproxy.local"),
        pytest.raises(TaskFailed) as caught,
    ):
        await LocalDeployment({"boom": boom}).run()

    assert str(caught.value) == "task 'boom' failed: KeyError"
    assert "secret" not in str(caught.value)
    assert caught.value.code == "workflow_failed"
    assert (caught.value.task, caught.value.error_type) == ("boom", "KeyError")
    assert caught.value.__cause__ is error
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [error]


async def test_generator_exception_after_progress_fails_the_run() -> None:
    async def steps() -> AsyncGenerator[float, None]:
        yield 0.5
        raise ZeroDivisionError

    stream = LocalDeployment({"steps": steps}).run_stream()
    states = [(await stream.__anext__()).state for _ in range(3)]

    with pytest.raises(TaskFailed, match=r"^task 'steps' failed: ZeroDivisionError$"):
        await stream.__anext__()
    assert states == [State.PENDING, State.STARTED, State.STARTED]


async def test_an_ikproxy_error_from_a_task_passes_through_unchanged() -> None:
    error = WorkflowFailed("the model refused", status_code=520)

    async def task() -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    with pytest.raises(WorkflowFailed) as caught:
        await LocalDeployment({"task": task}).run()

    assert caught.value is error


async def test_a_bad_progress_value_fails_the_run() -> None:
    def steps() -> Generator[float, None, None]:
        yield 1.5

    with pytest.raises(TaskFailed, match=r"^task 'steps' failed: ValueError$") as caught:
        await LocalDeployment({"steps": steps}).run()

    assert str(caught.value.__cause__) == "fraction must be a number from 0 to 1, not 1.5"


def test_update_checks_its_values() -> None:
    assert Update(fraction=1).fraction == 1.0
    with pytest.raises(ValueError, match=r"^fraction must be a number from 0 to 1, not -0.1$"):
        Update(fraction=-0.1)
    with pytest.raises(ValueError, match=r"^fraction must be a number from 0 to 1, not True$"):
        Update(fraction=True)
    message = r"^eta must be milliseconds >= 0 or a \(lower, upper\) pair of them, not "
    with pytest.raises(ValueError, match=message + r"-5$"):
        Update(eta=-5)
    with pytest.raises(ValueError, match=message + r"\(1, 2, 3\)$"):
        Update(eta=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message + r"inf$"):
        Update(eta=float("inf"))


# -- concurrency -------------------------------------------------------------------


async def test_runs_beyond_max_concurrency_wait_in_pending() -> None:
    release_first = anyio.Event()
    first_entered = anyio.Event()
    second_entered = anyio.Event()
    log: list[str] = []

    async def task(*, which: str) -> None:
        log.append(f"{which} entered")
        if which == "first":
            first_entered.set()
            await release_first.wait()
        else:
            second_entered.set()
        log.append(f"{which} done")

    deployment = LocalDeployment({"task": task}, max_concurrency=1)
    second_items: list[Progress] = []

    async def consume(which: str, into: list[Progress]) -> None:
        async for progress in deployment.run_stream(parameters={"which": which}):
            into.append(progress)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, "first", [])
            await first_entered.wait()
            tg.start_soon(consume, "second", second_items)
            await anyio.wait_all_tasks_blocked()

            assert [p.state for p in second_items] == [State.PENDING]
            assert not second_entered.is_set()

            release_first.set()
            await second_entered.wait()

    assert log == ["first entered", "first done", "second entered", "second done"]
    assert [p.state for p in second_items] == [State.PENDING, State.STARTED, State.SUCCESS]


async def test_a_slot_is_freed_when_a_run_is_closed_early() -> None:
    async def steps() -> AsyncGenerator[object, None]:
        yield 0.5
        yield PNG

    deployment = LocalDeployment({"steps": steps}, max_concurrency=1)
    stream = deployment.run_stream()
    for _ in range(3):  # PENDING, STARTED, 0.5: the slot is held
        await stream.__anext__()
    await stream.aclose()

    with anyio.fail_after(WAIT):
        assert (await deployment.run()).outputs == (PNG,)


# -- timeouts ----------------------------------------------------------------------


async def test_timeout_raises_run_timeout() -> None:
    cleaned = anyio.Event()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    deployment = LocalDeployment({"forever": forever})

    with anyio.fail_after(WAIT), pytest.raises(RunTimeout) as caught:
        await deployment.run(timeout=0.05)

    assert str(caught.value) == "task 'forever' did not finish within 0.05 s"
    assert caught.value.code == "timeout"
    assert cleaned.is_set()


async def test_the_deployment_timeout_is_the_default() -> None:
    async def forever() -> None:
        await anyio.sleep_forever()

    deployment = LocalDeployment({"forever": forever}, timeout=0.05)

    with anyio.fail_after(WAIT), pytest.raises(RunTimeout, match=r"within 0.05 s$"):
        await deployment.run()


async def test_waiting_for_a_slot_counts_towards_the_timeout() -> None:
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    deployment = LocalDeployment({"hold": hold}, max_concurrency=1)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deployment.run)
            await anyio.wait_all_tasks_blocked()
            stream = deployment.run_stream(timeout=0.05)
            assert (await stream.__anext__()).state == State.PENDING
            with pytest.raises(RunTimeout):
                await stream.__anext__()
            release.set()


async def test_timeout_stops_a_sync_task_that_checks_for_cancellation() -> None:
    cleaned = threading.Event()

    def spin() -> None:
        try:
            while True:
                check_cancelled()
                threading.Event().wait(0.005)
        finally:
            cleaned.set()

    with anyio.fail_after(WAIT), pytest.raises(RunTimeout):
        await LocalDeployment({"spin": spin}).run(timeout=0.05)

    assert cleaned.is_set()


# -- cancellation ------------------------------------------------------------------


async def test_cancellation_reaches_an_async_task() -> None:
    entered = anyio.Event()
    cleaned = anyio.Event()

    async def forever() -> None:
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    deployment = LocalDeployment({"forever": forever})

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, deployment.run_stream())
            await entered.wait()
            tg.cancel_scope.cancel()
        await cleaned.wait()


async def test_closing_the_stream_closes_an_async_generator() -> None:
    cleaned = anyio.Event()
    resumed = []

    async def steps() -> AsyncGenerator[object, None]:
        try:
            yield 0.5
            resumed.append(True)
            yield PNG
        finally:
            cleaned.set()

    stream = LocalDeployment({"steps": steps}).run_stream()
    assert [(await stream.__anext__()).fraction for _ in range(3)] == [None, None, 0.5]
    await stream.aclose()

    assert cleaned.is_set()
    assert resumed == []


async def test_closing_the_stream_closes_a_sync_generator_between_steps() -> None:
    cleaned_in: list[int] = []
    resumed = []

    def steps() -> Generator[object, None, None]:
        try:
            yield 0.5
            resumed.append(True)
            yield PNG
        finally:
            cleaned_in.append(threading.get_ident())

    stream = LocalDeployment({"steps": steps}).run_stream()
    assert [(await stream.__anext__()).fraction for _ in range(3)] == [None, None, 0.5]
    await stream.aclose()

    # Closed by the deployment, in a worker thread (not by the garbage collector, in this one).
    assert len(cleaned_in) == 1
    assert cleaned_in[0] != threading.get_ident()
    assert resumed == []


async def test_cancellation_stops_a_sync_generator_after_the_current_step() -> None:
    in_step = threading.Event()
    finish_step = threading.Event()
    cleaned = threading.Event()
    next_step_ran = []

    def steps() -> Generator[object, None, None]:
        try:
            yield 0.25
            in_step.set()
            finish_step.wait(WAIT)
            yield 0.5
            next_step_ran.append(True)
            yield PNG
        finally:
            cleaned.set()

    deployment = LocalDeployment({"steps": steps})

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, deployment.run_stream())
            await wait_thread_event(in_step)
            tg.cancel_scope.cancel()
            finish_step.set()  # the step in progress completes; no further step starts
        await wait_thread_event(cleaned)

    assert next_step_ran == []


async def test_cancellation_reaches_a_sync_task_through_check_cancelled() -> None:
    entered = threading.Event()
    cleaned = threading.Event()

    def spin() -> None:
        entered.set()
        try:
            while True:
                check_cancelled()
                threading.Event().wait(0.005)
        finally:
            cleaned.set()

    deployment = LocalDeployment({"spin": spin})

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, deployment.run_stream())
            await wait_thread_event(entered)
            tg.cancel_scope.cancel()
        await wait_thread_event(cleaned)


def test_check_cancelled_does_nothing_outside_a_task_thread() -> None:
    check_cancelled()  # no exception: a task stays callable as a plain function


# -- blocking and threads ----------------------------------------------------------


async def test_the_event_loop_keeps_running_while_a_sync_task_runs() -> None:
    task_began = threading.Event()
    loop_ran = threading.Event()

    def task() -> dict[str, bool]:
        task_began.set()
        # Only a task of the event loop sets `loop_ran`, after this task began:
        # if this thread blocked the loop, the wait would run out.
        return {"loop_ran": loop_ran.wait(WAIT)}

    async def loop_task() -> None:
        await wait_thread_event(task_began)
        loop_ran.set()

    deployment = LocalDeployment({"task": task})
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_task)
        results = await deployment.run()

    assert results.outputs == (TaskIO("loop_ran", True),)


def test_run_sync_from_a_plain_thread() -> None:
    deployment = LocalDeployment({"echo": lambda image: image})
    found: list[Results] = []
    thread = threading.Thread(target=lambda: found.append(deployment.run_sync(PNG)))

    thread.start()
    thread.join(WAIT)

    assert not thread.is_alive()
    assert [r.outputs for r in found] == [(PNG,)]


async def test_run_sync_refuses_to_run_inside_an_event_loop() -> None:
    deployment = LocalDeployment({"echo": lambda image: image})

    with pytest.raises(RuntimeError) as caught:
        deployment.run_sync(PNG)

    assert str(caught.value) == (
        "run_sync() cannot be called from a running event loop: "
        "use `await deployment.run(...)` instead"
    )


def test_the_limiter_works_across_successive_event_loops() -> None:
    deployment = LocalDeployment({"echo": lambda image: image}, max_concurrency=1)

    assert deployment.run_sync(PNG).outputs == (PNG,)
    assert deployment.run_sync(PNG).outputs == (PNG,)
