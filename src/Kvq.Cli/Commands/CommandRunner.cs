using Kvq.Formats;

namespace Kvq.Cli.Commands;

/// <summary>Runs a command body, turning the errors a user can fix into one clear line and exit code 2.</summary>
public static class CommandRunner
{
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is CliException or ModelFormatException or NotAModelException or FileNotFoundException
                                      or DirectoryNotFoundException or ArgumentException or Cache.KvSpecException
                                      or Cache.Sessions.KvSessionException
                                      or Model.UnsupportedArchitectureException)
        {
            Console.Error.WriteLine($"kvq: {e.Message}");
            return 2;
        }
    }
}
