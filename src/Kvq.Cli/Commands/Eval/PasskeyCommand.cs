using System.CommandLine;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval passkey: the standard pass-key prompt ("The pass key is N. Remember it. ...") at depths x lengths.</summary>
public static class PasskeyCommand
{
    public static Command Create() => RetrievalCommand.Create("passkey",
        "passkey retrieval: a 5-digit key hidden in repeated filler at depths x lengths; greedy answer, exact match",
        readText: false, defaultLengths: "512,1024,2048,4000", run => new PasskeyTask(run.Loaded.Tokenizer));
}
