namespace Kvq.Cli;

/// <summary>A user error (bad argument, missing file): printed as one line, exit code 2.</summary>
public sealed class CliException(string message) : Exception(message);
