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
                                      or Model.UnsupportedArchitectureException
                                      or IO.FileWriteException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"kvq: {e.Message}");
            return 2;
        }
        catch (Cache.KvHostMemoryException e)
        {
            Console.Error.WriteLine($"kvq: {e.Message}");
            return 2;
        }
        catch (OutOfMemoryException)
        {
            // Elsewhere than the cache's arenas (weights, scratch): still one line, not a stack trace.
            Console.Error.WriteLine("kvq: out of host memory; give a smaller --ctx or --kv format, or run on a machine with more memory");
            return 2;
        }
    }
}
