using System.CommandLine;
using Kvq.Cli.Commands;

namespace Kvq.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
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
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) Console.Error.WriteLine($"kvq: {e.Message}");
            Console.Error.WriteLine("kvq: see 'kvq --help'");
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
}
