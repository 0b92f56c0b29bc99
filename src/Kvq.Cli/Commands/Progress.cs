using Spectre.Console;

namespace Kvq.Cli.Commands;

/// <summary>Progress on stderr (so stdout stays clean for tables and JSON): a bar with ETA on a terminal, plain lines otherwise.</summary>
public static class Progress
{
    private static readonly IAnsiConsole Err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public static T Run<T>(string title, Func<Action<int, int>, T> work) => RunPhases(p => work((done, total) => p(title, done, total)));

    /// <summary>Work in named phases, reported as (phase, done, total): a bar per phase, added when it first reports.</summary>
    public static T RunPhases<T>(Func<Action<string, int, int>, T> work)
    {
        if (Console.IsErrorRedirected)
        {
            return work((phase, done, total) => Console.Error.WriteLine($"{phase}: {done}/{total}"));
        }
        T result = default!;
        Err.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = work((phase, done, total) =>
                {
                    lock (tasks)
                    {
                        if (!tasks.TryGetValue(phase, out var task)) tasks[phase] = task = ctx.AddTask(Markup.Escape(phase));
                        task.MaxValue = total;
                        task.Value = done;
                    }
                });
            });
        return result;
    }
}
