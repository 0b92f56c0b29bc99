using System.CommandLine;
using Kvq.Cli.Commands;

namespace Kvq.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        IsaDispatch.ToFastestBuild(args);
        var root = new RootCommand("kvq: long-context LLM inference with a compressed KV cache")
        {
            GenerateCommand.Create(),
            InspectCommand.Create(),
            EvalCommand.Create(),
            BenchCommand.Create(),
            CalibrateCommand.Create(),
            ServeCommand.Create(),
            ChatCommand.Create(),
        };
        foreach (var option in root.Options.OfType<VersionOption>()) option.Action = new PrintVersion();
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) Console.Error.WriteLine($"kvq: {e.Message}");
            Console.Error.WriteLine($"kvq: see '{HelpCommand(parse)} --help'");
            return 2;
        }
        try
        {
            return parse.Invoke();
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"kvq: {e.Message}");
            return 2;
        }
    }

    /// <summary>"kvq eval ppl": the command whose options were wrong, for the help hint.</summary>
    private static string HelpCommand(ParseResult parse)
    {
        var names = new List<string>();
        for (var c = parse.CommandResult; c != null; c = c.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(c.Parent == null ? "kvq" : c.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    /// <summary>--version prints <see cref="KvqInfo.InformationalVersion"/>, as reports do (not the entry assembly's,
    /// which differs when kvq runs inside another process, such as the tests).</summary>
    private sealed class PrintVersion : System.CommandLine.Invocation.SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            Console.Out.WriteLine(KvqInfo.InformationalVersion);
            return 0;
        }
    }
}
