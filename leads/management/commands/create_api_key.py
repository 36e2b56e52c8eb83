from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leads.models import ApiKey, ApiScope, Customer


class Command(BaseCommand):
    help = "Create an API key and print it once, alone on the last line (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A label for the key, e.g. the integrating system's name.")
        parser.add_argument("--scope", required=True, choices=ApiScope.values)
        parser.add_argument("--customer-id", type=int, help="Required for --scope ingest.")

    def handle(self, *args: Any, name: str, scope: str, customer_id: int | None, **options: Any) -> None:
        if scope == ApiScope.INGEST:
            if customer_id is None:
                raise CommandError(
                    "--scope ingest needs --customer-id N (the customer whose leads it sends)."
                )
            if not Customer.objects.filter(pk=customer_id).exists():
                raise CommandError(f"There is no customer {customer_id}.")
        elif customer_id is not None:
            raise CommandError("--customer-id only goes with --scope ingest.")
        if not name.strip() or len(name) > 50:
            raise CommandError("NAME must be 1 to 50 characters.")
        try:
            name.encode()
        except UnicodeEncodeError:
            # Bytes that are no UTF-8 (a Latin-1 "café") reach Python as lone surrogates,
            # which neither the database nor the terminal can take.
            raise CommandError("NAME is not UTF-8 text; type it in a UTF-8 terminal.") from None
        _, key = ApiKey.objects.create_key(name=name, scope=scope, customer_id=customer_id)
        self.stderr.write(f"Created {scope} key {name!r}; it is shown only now:")
        self.stdout.write(key)
