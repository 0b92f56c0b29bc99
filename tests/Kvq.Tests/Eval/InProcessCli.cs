using Kvq.Cli;

namespace Kvq.Tests.Eval;

/// <summary>`kvq` run in process through Program.Main with the console captured (tests using it join
/// <see cref="ConsoleCollection"/>: redirection is process-wide).</summary>
internal static class InProcessCli
{
    public static (int Code, string Out, string Err) Run(params string[] args) => RunWithInput("", args);

    /// <summary>The same with <paramref name="stdin"/> as standard input.</summary>
    public static (int Code, string Out, string Err) RunWithInput(string stdin, params string[] args)
    {
        var (stdout, stderr, input) = (Console.Out, Console.Error, Console.In);
        var o = new StringWriter();
        var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        Console.SetIn(new StringReader(stdin));
        try
        {
            return (Program.Main(args), o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
            Console.SetIn(input);
        }
    }

    /// <summary>A user mistake: exit code 2 and one line on stderr, "kvq: ..." containing <paramref name="expected"/>
    /// (a parse error may be followed by the hint "kvq: see 'kvq COMMAND --help'").</summary>
    public static void AssertUserError((int Code, string Out, string Err) r, string expected)
    {
        Assert.Equal(2, r.Code);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("kvq: see 'kvq", StringComparison.Ordinal)).ToArray();
        Assert.Single(lines);
        Assert.StartsWith("kvq: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }
}
