using Spectre.Console;

namespace Kvq.Cli.Commands;

/// <summary>Progress on stderr (so stdout stays clean for tables and JSON): a bar with ETA on a terminal, plain lines otherwise.</summary>
public static class Progress
{
    private static readonly IAnsiConsole Err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public static T Run<T>(string title, Func<Action<int, int>, T> work)
    {
        if (Console.IsErrorRedirected)
        {
            return work((done, total) => Console.Error.WriteLine($"{title}: {done}/{total}"));
        }
        T result = default!;
        Err.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title));
                result = work((done, total) =>
                {
                    task.MaxValue = total;
                    task.Value = done;
                });
            });
        return result;
    }
}
