using System.CommandLine;
using Kvq.Eval;
using Kvq.Text;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval needle: "The secret ingredient of the captain's soup is NAME." in book text at depths x lengths.</summary>
public static class NeedleCommand
{
    public static Command Create() => RetrievalCommand.Create("needle",
        "needle in a haystack: a sentence with a name inserted in book text (default Moby Dick) at depths x lengths; greedy answer, exact recall",
        readText: true, defaultLengths: "512,1024,2048,4000",
        run => new NeedleTask(run.Loaded.Tokenizer, TextNormalizer.ReadNormalized(run.TextPath!)));
}
