import { Link } from "react-router";
import { Card, PageTitle } from "../components/ui";

export default function ComingSoon({ title }: { title: string }) {
  return (
    <>
      <PageTitle>{title}</PageTitle>
      <Card>
        <p>Coming soon.</p>
        <p className="mt-2 text-sm">
          <Link className="text-blue-700 underline dark:text-blue-300" to="/dashboard/settings">
            Back to settings
          </Link>
        </p>
      </Card>
    </>
  );
}
