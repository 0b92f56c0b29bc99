namespace Kvq; public static class KvqInfo { public const string Version = "0.1.0"; }
